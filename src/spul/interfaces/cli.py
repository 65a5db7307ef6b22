"""The ``spul`` command line: ``main`` and the parser; every subcommand is a module of
``spul.interfaces.commands`` (the pipeline steps in ``steps.py``).

    spul run --config configs/quickstart.yaml unlearn.alpha=0.1
    spul finetune|unlearn|evaluate --config FILE [key=value ...]
    spul prepare --config FILE | --recipe NAME ... -o DIR     (spul.interfaces.commands.prepare)

Errors the user can fix are printed as one line (``spul: error: ...``) with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from spul.errors import SpulError
from spul.interfaces.options import add_config_arguments, load_run_config, overrides_of, resolve_config_path
from spul.interfaces.runlog import close_run_logs

_load = load_run_config  # the historical name
__all__ = ["add_config_arguments", "build_parser", "main", "overrides_of", "resolve_config_path"]


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand lives in its own module of ``spul.interfaces.commands`` with a ``register(subparsers)``."""
    import importlib
    import pkgutil

    from spul.interfaces import commands

    parser = argparse.ArgumentParser(prog="spul", description="Inference-time unlearning for LLMs (SPUL, ECO, baselines).")
    parser.add_argument("--version", action="version", version=f"spul {__import__('spul').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: (m.name != "steps", m.name)):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse with KEY=VALUE overrides allowed anywhere on the line (``spul audit --artifact X key=val``).

    argparse gives a ``nargs="*"`` positional only the first run of positionals; later ``KEY=VALUE`` words come
    back as extras and are appended here, so overrides keep their command-line order (the last one wins).
    """
    args, extras = parser.parse_known_args(argv)
    late = [e for e in extras if "=" in e and not e.startswith("-")]
    unknown = [e for e in extras if e not in late]
    if late and not hasattr(args, "overrides"):
        unknown = extras
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if late:
        args.overrides = list(args.overrides or []) + late
    return args


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
    building = any(getattr(args, flag, None) for flag in ("recipe", "input", "preview"))  # spul prepare builds need no config
    if args.command in RUN_CONFIG_COMMANDS and not getattr(args, "list", False) and not building:
        load_run_config(args)


def fast_check(argv: list[str]) -> None:
    """``check_config`` on a light reading of the command line, before the full parser is built (building it
    lists every registered method's flags, which imports the methods and so torch). Lines with generated
    ``--SECTION.FIELD`` flags, help or build flags are left to the full parse."""
    light = argparse.ArgumentParser(add_help=False)
    light.add_argument("command", nargs="?")
    light.add_argument("--config", "-c")
    light.add_argument("--output-dir", "-o")
    light.add_argument("--list", action="store_true")
    try:
        args, extras = light.parse_known_args(argv)
    except SystemExit:
        return
    if args.command not in RUN_CONFIG_COMMANDS or any(e.startswith("-") and ("." in e or e in ("-h", "--help")) for e in extras):
        return
    if args.command == "prepare" and any(e.startswith("--") for e in extras):
        return
    args.overrides = [e for e in extras if "=" in e and not e.startswith("-")]
    check_config(args)


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)  # only inside main's catch_warnings block
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # weight-loading bars would add stderr lines to a one-line error
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        fast_check(argv)  # before the libraries load: a typo costs well under a second
    except SpulError as err:
        print(f"spul: error: {err}", file=sys.stderr)
        return err.exit_code
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import warnings

    with warnings.catch_warnings():  # the quieting ends with the command (a caller's own filters come back)
        if not args.verbose and args.command != "config":
            _quiet_libraries()
        return _dispatch(args)


def _dispatch(args) -> int:
    error = None
    try:
        check_config(args)  # the whole config (generated flags included), before the command's own imports
        return args.func(args)
    except SpulError as err:
        error = f"spul: error: {err}"
        print(error, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        error = "spul: interrupted; finished steps and complete checkpoints are kept — run the same command again (same settings) to resume"
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
        from spul.interfaces.explain import explain

        explained = explain(err)
        if explained:
            error = f"spul: error: {explained[0]}"
            print(error, file=sys.stderr)
            return explained[1]
        first = str(err).splitlines()[0][:300] if str(err) else ""
        error = f"spul: error: unexpected {type(err).__name__}: {first} — fix: re-run with -v for the full traceback and report it"
        print(error, file=sys.stderr)
        return 1
    finally:
        close_run_logs(error)


if __name__ == "__main__":
    sys.exit(main())
