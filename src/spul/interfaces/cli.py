"""The ``spul`` command line: one subcommand per pipeline step, all driven by the same ``RunConfig``.

    spul run --config configs/quickstart.yaml unlearn.alpha=0.1
    spul prepare|finetune|unlearn|evaluate --config FILE [key=value ...]

Errors the user can fix are printed as one line (``spul: error: ...``) with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from spul.errors import SpulError


def _load(args) -> "RunConfig":  # noqa: F821
    from spul.configuration import load_config
    from spul.run_config import RunConfig

    return load_config(RunConfig, resolve_config_path(args.config), overrides_of(args))


def overrides_of(args) -> list[str]:
    overrides = list(getattr(args, "overrides", None) or [])
    if getattr(args, "output_dir", None):
        overrides.append(f"output_dir={args.output_dir}")
    return overrides


def resolve_config_path(name: str | None) -> str | None:
    """A path as given, or the bundled config of that name (``quickstart`` → spul/configs/quickstart.yaml)."""
    if not name or os.path.exists(name):
        return name
    from importlib import resources

    bundled = resources.files("spul") / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    return str(bundled) if bundled.is_file() else name


_RUN_LOGS: list[tuple[logging.Handler, int, list[logging.Handler]]] = []  # handler, root level before, handlers re-levelled


def start_run_log(cfg, args) -> None:
    """Append this command's log (INFO and up, training losses included) to ``OUTPUT/run.log``; the console keeps
    its level. One process of a multi-process launch writes it."""
    if os.environ.get("RANK", "0") != "0":
        return
    cfg.out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(cfg.out / "run.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    relevelled = [h for h in root.handlers if h.level == logging.NOTSET]
    for existing in relevelled:
        existing.setLevel(root.level)  # the console stays at WARNING (or INFO with -v)
    _RUN_LOGS.append((handler, root.level, relevelled))
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    from spul import __version__

    logging.getLogger("spul").info("spul %s: spul %s", __version__, " ".join(sys.argv[1:]) or args.command)


def _close_run_logs(error: str | None = None) -> None:
    root = logging.getLogger()
    while _RUN_LOGS:
        handler, level, relevelled = _RUN_LOGS.pop()
        if error:
            handler.handle(logging.LogRecord("spul", logging.ERROR, __file__, 0, error, None, None))
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        for existing in relevelled:
            existing.setLevel(logging.NOTSET)


def cmd_prepare(args) -> int:
    from spul.pipeline import prepare

    cfg = _load(args)
    data = prepare(cfg)
    print(f"prepared {data.source}: " + ", ".join(f"{k} {v}" for k, v in data.sizes().items()) + f" → {cfg.out / 'data'}")
    return 0


def cmd_finetune(args) -> int:
    from spul.pipeline import finetune

    cfg = _load(args)
    start_run_log(cfg, args)
    print(f"familiarized model: {finetune(cfg)}")
    return 0


def cmd_unlearn(args) -> int:
    from spul.pipeline import unlearn

    cfg = _load(args)
    start_run_log(cfg, args)
    print(f"artifact: {unlearn(cfg, resume=not args.no_resume)}")
    return 0


def cmd_evaluate(args) -> int:
    from spul.pipeline import evaluate, summary

    cfg = _load(args)
    start_run_log(cfg, args)
    results = evaluate(cfg, artifact=args.artifact, base=args.base)
    print(summary(results))
    print(f"report: {cfg.out / 'report' / 'results.md'}")
    return 0


def cmd_run(args) -> int:
    import time

    from spul.pipeline import run, summary

    cfg = _load(args)
    start_run_log(cfg, args)
    started = time.time()
    results = run(cfg)
    print()
    print(summary(results))
    print(f"\nwall time {time.time() - started:.0f} s; full report (with F1): {cfg.out / 'report' / 'results.md'}")
    return 0


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

    print(dump_yaml(_load(args)), end="")
    return 0


COMMANDS: dict[str, tuple[Callable, str]] = {
    "prepare": (cmd_prepare, "load, validate and record the four data splits"),
    "finetune": (cmd_finetune, "familiarise the base model with the task (LoRA / QLoRA)"),
    "unlearn": (cmd_unlearn, "train a soft prompt that makes the frozen model forget (SPUL)"),
    "evaluate": (cmd_evaluate, "accuracy and weighted F1 on the four splits, base vs unlearned"),
    "run": (cmd_run, "the whole pipeline from one config file"),
    "config": (cmd_config, "print the effective configuration (defaults + file + overrides)"),
}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The options every config-driven subcommand shares (also used by ``spul.interfaces.commands`` modules)."""
    p.add_argument("--config", "-c", help="YAML config file, or the name of a bundled one (e.g. quickstart)")
    p.add_argument("--output-dir", "-o", help="where the run's files go (overrides output_dir)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. unlearn.alpha=0.1 data.limits.train_retain=500")
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spul", description="Inference-time unlearning for LLMs (SPUL, ECO, baselines).")
    parser.add_argument("--version", action="version", version=f"spul {__import__('spul').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(p)
        if name == "unlearn":
            p.add_argument("--no-resume", action="store_true", help="start over instead of resuming from the last checkpoint")
        if name == "config":
            p.add_argument("--list", action="store_true", help="list the bundled configs (names usable with -c)")
        if name == "evaluate":
            p.add_argument("--artifact", help="artifact folder (default: OUTPUT_DIR/artifact when present)")
            p.add_argument("--base", help="base model to evaluate (default: the artifact's base model)")
        p.set_defaults(func=func)
    # Further subcommands (eco, audit, serve, bench, experiment, ...) live one per module in
    # spul.interfaces.commands; each module defines ``register(subparsers)``.
    import importlib
    import pkgutil

    from spul.interfaces import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


# These subcommands train into output_dir: without -c they would start the paper-default run somewhere.
REQUIRES_CONFIG = ("run", "finetune", "unlearn")
# These read a RunConfig: it is validated before any heavy import, so a typo is answered in well under a second.
RUN_CONFIG_COMMANDS = ("prepare", "finetune", "unlearn", "evaluate", "run", "config", "eco")


def check_config(args) -> None:
    """Fail fast on a missing ``-c`` or an invalid config, before torch/transformers load."""
    from spul.errors import ConfigError

    if args.command in REQUIRES_CONFIG and not getattr(args, "config", None):
        raise ConfigError(f"spul {args.command} needs a config: -c FILE or a bundled name",
                          f"list the bundled ones with `spul config --list`, e.g. spul {args.command} -c quickstart")
    if args.command in RUN_CONFIG_COMMANDS and not getattr(args, "list", False):
        _load(args)


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # weight-loading bars would add stderr lines to a one-line error
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    error = None
    try:
        check_config(args)  # before the libraries load: a typo costs well under a second
        if not args.verbose and args.command != "config":
            _quiet_libraries()
        return args.func(args)
    except SpulError as err:
        error = f"spul: error: {err}"
        print(error, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        error = "spul: interrupted; finished steps and checkpoints are kept, run the same command again to resume"
        print(error, file=sys.stderr)
        return 130
    except MemoryError:
        print("spul: error: out of memory — fix: lower the batch size (e.g. unlearn.batch_size=8) or model.max_length", file=sys.stderr)
        return 3
    except Exception as err:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if args.verbose:
            raise
        if any(m in str(err).lower() for m in ("out of memory", "can't allocate memory", "not enough memory")):
            print("spul: error: out of memory on the device — fix: lower the batch size or max_length, or enable gradient checkpointing", file=sys.stderr)
            return 3
        first = str(err).splitlines()[0][:300] if str(err) else ""
        error = f"spul: error: unexpected {type(err).__name__}: {first} — fix: re-run with -v for the full traceback and report it"
        print(error, file=sys.stderr)
        return 1
    finally:
        _close_run_logs(error)


if __name__ == "__main__":
    sys.exit(main())
