"""What every config-driven subcommand shares: ``--config``, ``--output-dir``, ``KEY=VALUE`` overrides, and
flags generated from the config dataclasses (``--unlearn.alpha 0.1`` = ``unlearn.alpha=0.1``).

A flag exists for every scalar, enum and list field of a config section, with the field's
``metadata={"help": ...}`` as its help; the values go through the same typed validation as YAML and overrides,
so a flag's default and type are never restated here.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import typing
from typing import Any

from spul.configuration import strip_optional

FLAG_PREFIX = "cfg:"


def resolve_config_path(name: str | None) -> str | None:
    """A path as given, or the bundled config of that name (``quickstart`` → spul/configs/quickstart.yaml)."""
    if not name or os.path.exists(name):
        return name
    from importlib import resources

    bundled = resources.files("spul") / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    return str(bundled) if bundled.is_file() else name


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--output-dir``, ``KEY=VALUE`` overrides and ``-v``."""
    p.add_argument("--config", "-c", help="YAML config file, or the name of a bundled one (e.g. quickstart)")
    p.add_argument("--output-dir", "-o", help="where the run's files go (overrides output_dir)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. unlearn.alpha=0.1 data.limits.train_retain=500")
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")


def _add_field(group, key: str, tp: Any, f: dataclasses.Field, note: str = "") -> None:
    tp, _ = strip_optional(tp)
    help_text = (f.metadata.get("help", "") if f.metadata else "") + note
    kwargs: dict[str, Any] = {"dest": FLAG_PREFIX + key, "default": argparse.SUPPRESS, "help": help_text.strip().replace("%", "%%") or None}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        kwargs["choices"] = [m.value for m in tp]
    else:
        kwargs["metavar"] = "VALUE"
        if typing.get_origin(tp) in (list, tuple):
            kwargs["nargs"] = "+"
    group.add_argument(f"--{key}", **kwargs)


def _flag_fields(cls: type, prefix: str):
    """``(key, type, field)`` of every flag-able field of ``cls`` (nested dataclass sections recurse)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, _ = strip_optional(hints[f.name])
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _flag_fields(tp, key)
        elif typing.get_origin(tp) is not dict and tp is not Any:
            yield key, tp, f


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str) -> None:
    """``--PREFIX.FIELD`` flags for the fields of dataclass ``cls``, in one argument group."""
    group = parser.add_argument_group(f"{prefix} settings (same as {prefix}.KEY=VALUE)")
    for key, tp, f in _flag_fields(cls, prefix):
        _add_field(group, key, tp, f)


def add_unlearn_arguments(parser: argparse.ArgumentParser) -> None:
    """``--unlearn.*`` flags: the fields of every registered method's config (each flag notes its methods)."""
    from spul.methods.registry import get_method, method_names

    names = method_names()
    found: dict[str, tuple[Any, dataclasses.Field, list[str]]] = {}
    for name in names:
        for key, tp, f in _flag_fields(get_method(name).config_cls, "unlearn"):
            found.setdefault(key, (tp, f, []))[2].append(name)
    group = parser.add_argument_group("unlearn settings (same as unlearn.KEY=VALUE; unlearn.method picks the method)")
    for key, (tp, f, methods) in found.items():
        if key == "unlearn.method":
            group.add_argument("--unlearn.method", dest=FLAG_PREFIX + key, default=argparse.SUPPRESS, choices=names,
                               help="the unlearning method")
            continue
        missing = [n for n in names if n not in methods]
        note = "" if not missing else f" [not {', '.join(missing)}]" if len(missing) < len(methods) else f" [{', '.join(methods)}]"
        _add_field(group, key, tp, f, note)


def overrides_of(args) -> list[str]:
    """``KEY=VALUE`` overrides from the positional overrides, ``--output-dir`` and the generated flags."""
    overrides = list(getattr(args, "overrides", None) or [])
    for dest, value in vars(args).items():
        if dest.startswith(FLAG_PREFIX):
            text = "[" + ", ".join(str(v) for v in value) + "]" if isinstance(value, list) else str(value)
            overrides.append(f"{dest[len(FLAG_PREFIX):]}={text}")
    if getattr(args, "output_dir", None):
        overrides.append(f"output_dir={args.output_dir}")
    return overrides


def load_run_config(args):
    """The ``RunConfig`` of a subcommand: defaults ← file ← flags and overrides."""
    from spul.configuration import deep_merge, from_dict, load_yaml, parse_overrides
    from spul.run_config import RunConfig
    from spul.run_config_generation import GenerationRunConfig, is_generation_config

    path = resolve_config_path(args.config)
    values = deep_merge(load_yaml(path) if path else {}, parse_overrides(overrides_of(args)))
    # task.kind qa / completion: the generative run's config (spul.pipeline_generation)
    return from_dict(GenerationRunConfig if is_generation_config(values) else RunConfig, values)
