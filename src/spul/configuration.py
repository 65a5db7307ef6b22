"""Typed configuration: dataclasses built from YAML files and ``key.sub=value`` overrides.

Every config section is a ``@dataclass`` that validates itself in ``__post_init__``; this module only turns
plain dicts (from YAML or the command line) into those dataclasses, with one-line errors that name the key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from spul.errors import ConfigError

T = TypeVar("T")


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (plain YAML would silently keep only the last one)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys in any mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base loader reports unhashable keys itself
            if key in seen:
                raise DuplicateKeyError(None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                                        key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that raises ``DuplicateKeyError`` when a mapping repeats a key."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    tp, optional = strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"config key '{key}' must not be empty", f"give '{key}' a value or remove the line")
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}", f"write '{key}:' as a section")
        return from_dict(tp, value, prefix=key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"config key '{key}' has unknown value {value!r}", f"use one of: {choices}") from None
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}", "write it as [a, b] or a,b")
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}", f"write '{key}:' as a section")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "yes", "1", "on", "false", "no", "0", "off"}:
            return value.lower() in {"true", "yes", "1", "on"}
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}", "write true or false")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}", "write a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be a {tp.__name__}, got {value!r}", f"write a {tp.__name__}") from None
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}' is {value!r}, not a finite number", f"write a finite {tp.__name__}")
        if tp is int:
            if not number.is_integer():
                raise ConfigError(f"config key '{key}' must be a whole number, got {value!r}", "write an integer")
            return int(number)
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' must be text, got {value!r}", "write a single value")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys by name."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"section '{prefix}'" if prefix else "the config"
        raise ConfigError(
            f"unknown config key '{(prefix + '.' if prefix else '') + unknown[0]}' in {where}",
            f"use one of: {', '.join(sorted(names))}",
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid config{(' section ' + repr(prefix)) if prefix else ''}: {err}", "check the values against the docs") from None


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-ready view of a config dataclass (enums as their values)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ``["unlearn.alpha=0.1", "model.name_or_path=gpt2"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value", "write e.g. unlearn.alpha=0.1")
        key, raw = item.split("=", 1)
        key = key.strip().removeprefix("--")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key", "write e.g. unlearn.alpha=0.1")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override", "set each key once")
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder", "point --config at the YAML file itself")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist", "check the path, or name a bundled config (list them with `spul config --list`)")
    if path.stat().st_size > 10_000_000:
        raise ConfigError(f"config file {str(path)!r} is larger than 10 MB", "point --config at the YAML config file")
    try:
        data = safe_load_unique(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as err:
        raise ConfigError(f"config file {str(path)!r}: {err.problem}", "keep one of the two entries (a YAML section given twice drops the first)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}", "fix the YAML syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text", "save it as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections", "start it with e.g. 'model:'")
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Defaults ← YAML file ← command-line overrides, validated into ``cls``."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)
