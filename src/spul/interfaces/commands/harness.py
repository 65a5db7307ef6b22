"""``spul lm-eval``: lm-evaluation-harness tasks with a SPUL artifact applied, and the spul task as lm-eval YAML.

    spul lm-eval runs/quickstart/artifact --tasks arc_easy,mmlu --with-base     # utility with the prompt on
    spul lm-eval runs/quickstart/artifact --export-task exported/lm_eval         # the spul task for lm-eval
    spul lm-eval runs/quickstart/artifact --tasks spul_task --include-path exported/lm_eval
"""

from __future__ import annotations

from pathlib import Path


def cmd_lm_eval(args) -> int:
    from spul.artifacts import read_metadata
    from spul.errors import ConfigError

    meta = read_metadata(args.artifact)
    if args.export_task:
        from spul.configuration import from_dict
        from spul.data.tasks import TaskConfig
        from spul.evaluation.harness import export_task

        data = Path(args.data) if args.data else Path(args.artifact).resolve().parent / "data"
        task = from_dict(TaskConfig, meta["task"]) if isinstance(meta.get("task"), dict) else TaskConfig()
        paths = export_task(task, data, args.export_task, args.name)
        print(f"wrote {len(paths)} lm-eval tasks (tag spul_{args.name}) to {args.export_task}:")
        for path in paths:
            print(f"  {path.name}")
        print(f"run them with: spul lm-eval {args.artifact} --tasks spul_{args.name} --include-path {args.export_task}")
        return 0
    if not args.tasks:
        raise ConfigError("spul lm-eval needs --tasks (or --export-task DIR)", "e.g. spul lm-eval ARTIFACT --tasks arc_easy")
    from spul.evaluation.harness import run_harness, summary_rows

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    options = {"base": args.model, "include_path": args.include_path, "limit": _limit(args.limit), "num_fewshot": args.num_fewshot,
               "batch_size": args.batch_size, "dtype": args.dtype, "device": args.device}
    runs = {"artifact": run_harness(args.artifact, tasks, **options)}
    if args.with_base:
        runs["base"] = run_harness(None, tasks, **{**options, "base": args.model or meta.get("base_model")})
    rows = {name: {(t, m): v for t, m, v in summary_rows(result)} for name, result in runs.items()}
    names = list(runs)
    print("| task | metric | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for key in rows["artifact"]:
        print(f"| {key[0]} | {key[1]} | " + " | ".join(f"{rows[n].get(key, float('nan')):.4f}" for n in names) + " |")
    if args.output:
        from spul.io import write_json

        write_json(args.output, {"artifact": str(args.artifact), "tasks": tasks, "limit": args.limit,
                                 **{name: result.get("results", {}) for name, result in runs.items()}})
        print(f"results: {args.output}")
    return 0


def register(subparsers) -> None:
    help_text = "lm-evaluation-harness tasks (MMLU, ARC, WMDP, ...) with a soft-prompt artifact applied; export the spul task for lm-eval"
    p = subparsers.add_parser("lm-eval", help=help_text, description=help_text + ". Needs pip install 'spul[lmeval]'.")
    p.add_argument("artifact", help="SPUL artifact folder (OUTPUT/artifact); ECO artifacts cannot run under lm-eval")
    p.add_argument("--tasks", help="comma-separated lm-eval task, group or tag names")
    p.add_argument("--model", help="base model (default: the artifact's base_model)")
    p.add_argument("--include-path", help="folder of extra lm-eval task YAMLs (e.g. one written by --export-task)")
    p.add_argument("--limit", type=float, help="examples per task (an int) or a fraction; for quick checks only")
    p.add_argument("--num-fewshot", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--with-base", action="store_true", help="also run the base model without the artifact, side by side")
    p.add_argument("--output", help="write lm-eval's results as JSON here")
    p.add_argument("--export-task", metavar="DIR", help="write the spul task's splits as lm-eval task YAMLs + JSONL into DIR and stop")
    p.add_argument("--data", help="the run's data folder for --export-task (default: ARTIFACT/../data)")
    p.add_argument("--name", default="task", help="task name for --export-task: tasks spul_NAME_SPLIT, tag spul_NAME")
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    p.set_defaults(func=cmd_lm_eval)


def _limit(value):  # argparse gives a float; lm-eval reads >= 1 as a count
    return int(value) if value is not None and value >= 1 else value

