"""``spul experiment --config FILE [--shard I/N] [--shared-only] [key=value ...]``: every cell of an experiment,
cached and resumable; ``--shard`` computes one job's share (Slurm array jobs), a run without it merges."""

from __future__ import annotations


def cmd_experiment(args) -> int:
    from spul.configuration import deep_merge, from_dict, load_yaml, parse_overrides
    from spul.experiments import ExperimentConfig, run_experiment
    from spul.experiments.runner import parse_shard
    from spul.interfaces.options import overrides_of, resolve_config_path
    from spul.run_config_generation import is_generation_config

    shard = parse_shard(args.shard) if args.shard else None
    path = resolve_config_path(args.config)
    values = deep_merge(load_yaml(path) if path else {}, parse_overrides(overrides_of(args)))
    if is_generation_config(values):  # task.kind qa / completion: methods x grid on generative data
        from spul.experiments.generation import GenerationExperimentConfig, run_generation_experiment

        cfg = from_dict(GenerationExperimentConfig, values)
        runner = run_generation_experiment
    else:
        cfg = from_dict(ExperimentConfig, values)
        runner = run_experiment
    outcome = runner(cfg, progress=lambda msg: print(msg, flush=True), shard=shard, shared_only=args.shared_only)
    if args.shared_only:
        print(f"shared steps done in {outcome.output_dir}; {len(outcome.others)} cell(s) to run (e.g. with --shard I/N)")
        return 0
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]}: {len(outcome.computed)} cell(s) computed, {len(outcome.skipped)} cached, "
              f"{len(outcome.others)} left to the other shards; merge them into the report with the same command without --shard")
        return 0
    print()
    print((outcome.output_dir / "results.md").read_text(encoding="utf-8"))
    figures = outcome.output_dir / ("fq_vs_utility.png" if runner is not run_experiment else "figures")
    print(f"{len(outcome.computed)} cell(s) computed, {len(outcome.skipped)} cached; results: {outcome.output_dir / 'results.md'}, "
          f"{outcome.output_dir / 'results.csv'}, figures: {figures}")
    return 0


def register(subparsers) -> None:
    from spul.interfaces.options import add_config_arguments

    help_text = "run an experiment grid (methods × settings × forget fractions) with per-cell caching"
    p = subparsers.add_parser("experiment", help=help_text, description=help_text)
    add_config_arguments(p)
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="compute only shard I of N (0-based) of the cells and write no report; a later run without --shard "
                        "merges every cell file into the report (Slurm: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    p.add_argument("--shared-only", action="store_true",
                   help="only the steps every cell shares (data, fine-tune): run once before an array of shards")
    p.set_defaults(func=cmd_experiment)
