"""The pipeline's steps as subcommands, all driven by the same ``RunConfig``:

    spul run --config quickstart unlearn.alpha=0.1          (or --unlearn.alpha 0.1)
    spul run --config quickstart --unlearn.method npo --unlearn.learning_rate 1e-4
    spul finetune|unlearn|evaluate|config --config FILE [key=value ...]   (prepare: commands/prepare.py)

Each step's flags are generated from its config sections (``spul.interfaces.options``).
"""

from __future__ import annotations

import time

from spul.interfaces.options import add_config_arguments, add_dataclass_arguments, add_unlearn_arguments, load_run_config
from spul.interfaces.runlog import start_run_log
from spul.methods.distributed import is_main_process


def cmd_finetune(args) -> int:
    from spul.pipeline import finetune

    cfg = load_run_config(args)
    start_run_log(cfg, args.command)
    print(f"familiarized model: {finetune(cfg, resume=not args.no_resume)}")
    return 0


def cmd_unlearn(args) -> int:
    from spul.pipeline import unlearn

    cfg = load_run_config(args)
    start_run_log(cfg, args.command)
    print(f"artifact: {unlearn(cfg, resume=not args.no_resume)}")
    return 0


def cmd_evaluate(args) -> int:
    from spul.pipeline import evaluate, summary

    cfg = load_run_config(args)
    start_run_log(cfg, args.command)
    results = evaluate(cfg, artifact=args.artifact, base=args.base)
    if is_main_process():  # every process of a torchrun launch holds the same results; one prints them
        print(summary(results))
        print(f"report: {cfg.out / 'report' / 'results.md'}")
    return 0


def cmd_run(args) -> int:
    from spul.pipeline import run, summary

    cfg = load_run_config(args)
    start_run_log(cfg, args.command)
    started = time.time()
    if _is_generative(cfg):
        from spul import pipeline_generation

        rows = pipeline_generation.run(cfg, resume=not args.no_resume)
        print()
        print(pipeline_generation.summary(rows))
        print(f"\nwall time {time.time() - started:.0f} s; report: {cfg.out / 'report' / 'results.md'}")
        return 0
    results = run(cfg, resume=not args.no_resume)
    if not is_main_process():
        return 0
    print()
    print(summary(results))
    print(f"\nwall time {time.time() - started:.0f} s; full report (with F1): {cfg.out / 'report' / 'results.md'}")
    return 0


def _is_generative(cfg) -> bool:
    from spul.run_config_generation import GenerationRunConfig

    return isinstance(cfg, GenerationRunConfig)


def bundled_configs() -> list[tuple[str, str]]:
    """``(name, first comment line)`` of every config shipped in spul/configs (experiments as experiments/NAME)."""
    from importlib import resources

    root = resources.files("spul") / "configs"
    found = []
    for folder, prefix in ((root, ""), (root / "experiments", "experiments/")):
        for entry in sorted((e for e in folder.iterdir() if e.name.endswith(".yaml")), key=lambda e: e.name):
            first = next((line.lstrip("# ").strip() for line in entry.read_text(encoding="utf-8").splitlines() if line.startswith("#")), "")
            found.append((prefix + entry.name.removesuffix(".yaml"), first))
    return found


def cmd_config(args) -> int:
    if args.list:
        configs = bundled_configs()
        width = max(len(name) for name, _ in configs)
        print("bundled configs (use with -c NAME; experiments/* with `spul experiment -c`):")
        for name, about in configs:
            print(f"  {name:<{width}}  {about[:110]}")
        return 0
    from spul.configuration import dump_yaml

    print(dump_yaml(load_run_config(args)), end="")
    return 0


# name → (function, help, the RunConfig sections whose fields become flags)
STEPS = {
    "finetune": (cmd_finetune, "familiarise the base model with the task (LoRA / QLoRA)", ("model", "task", "data", "finetune")),
    "unlearn": (cmd_unlearn, "run the unlearning method (unlearn.method: spul, eco, ga, ..., rmu) and save its artifact",
                ("model", "task", "data", "finetune", "unlearn")),
    "evaluate": (cmd_evaluate, "accuracy and weighted F1 on the four splits, base vs unlearned",
                 ("model", "task", "data", "finetune", "evaluation")),
    "run": (cmd_run, "the whole pipeline from one config file", ("model", "task", "data", "finetune", "unlearn", "evaluation")),
    "config": (cmd_config, "print the effective configuration (defaults + file + overrides)",
               ("model", "task", "data", "finetune", "unlearn", "evaluation")),
}


def register(subparsers) -> None:
    import typing

    from spul.pipeline import RunConfig

    hints = typing.get_type_hints(RunConfig)
    for name, (func, help_text, sections) in STEPS.items():
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(p)
        if name in ("finetune", "unlearn", "run"):
            p.add_argument("--no-resume", action="store_true",
                           help="start training over (deleting old checkpoints) instead of resuming from the last checkpoint")
        if name == "config":
            p.add_argument("--list", action="store_true", help="list the bundled configs (names usable with -c)")
        if name == "evaluate":
            p.add_argument("--artifact", help="artifact folder (default: OUTPUT_DIR/artifact when present)")
            p.add_argument("--base", help="base model to evaluate (default: the artifact's base model)")
        for section in sections:
            if section == "unlearn":
                add_unlearn_arguments(p)
            else:
                add_dataclass_arguments(p, hints[section], section)
        p.set_defaults(func=func)
