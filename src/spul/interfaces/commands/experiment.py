"""``spul experiment --config FILE [key=value ...]``: every cell of an experiment, cached and resumable."""

from __future__ import annotations


def cmd_experiment(args) -> int:
    from spul.configuration import load_config
    from spul.experiments import ExperimentConfig, run_experiment
    from spul.interfaces.options import overrides_of, resolve_config_path

    cfg = load_config(ExperimentConfig, resolve_config_path(args.config), overrides_of(args))
    outcome = run_experiment(cfg, progress=lambda msg: print(msg, flush=True))
    print()
    print((outcome.output_dir / "results.md").read_text(encoding="utf-8"))
    print(f"{len(outcome.computed)} cell(s) computed, {len(outcome.skipped)} cached; results: {outcome.output_dir / 'results.md'}, "
          f"{outcome.output_dir / 'results.csv'}, figures in {outcome.output_dir / 'figures'}")
    return 0


def register(subparsers) -> None:
    from spul.interfaces.options import add_config_arguments

    help_text = "run an experiment grid (methods × settings × forget fractions) with per-cell caching"
    p = subparsers.add_parser("experiment", help=help_text, description=help_text)
    add_config_arguments(p)
    p.set_defaults(func=cmd_experiment)
