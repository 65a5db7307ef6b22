"""The method registry: every unlearning method is one module that registers itself here.

A method is its name, its typed config (a validated dataclass), ``train(job) -> artifact folder`` and
``load(folder, model, ...) -> Intervention``. Nothing outside this module chooses a method by its name: the
pipeline, the experiment runner, the audit and serving look it up with ``get_method`` / ``load_intervention``.

Adding a method: write ``spul/methods/<name>.py`` that calls ``register_method(...)`` and add its module to
``BUILTIN`` below (the one registration line).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from spul.errors import ConfigError

# the modules that register the bundled methods (imported on first lookup)
BUILTIN = (
    "spul.methods.spul.method",
    "spul.methods.eco.runner",
    "spul.methods.baselines.method",
    "spul.methods.npo",
    "spul.methods.simnpo",
    "spul.methods.idk_dpo",
    "spul.methods.rmu",
    "spul.methods.spul_gated",
)


# Bundled methods whose config class lives in a module without torch: their ``unlearn:`` section is validated
# before any heavy import (``spul run -c FILE`` answers a typo in well under a second). name -> (module, class,
# the values the name implies). Other methods' configs are found by importing their module.
LIGHT_CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "spul": ("spul.methods.spul.config", "SpulConfig", {}),
    "eco": ("spul.methods.eco.config", "EcoConfig", {}),
    **{m: ("spul.methods.baselines.config", "BaselineConfig", {"method": m}) for m in ("ga", "rl", "ga_kl", "ga_gd")},
}


@dataclass
class TrainJob:
    """Everything a method's ``train`` gets: the base model to unlearn from, the task, the data and its config."""

    model: Any  # spul.models.loading.ModelConfig whose name_or_path is the base model
    task: Any  # spul.data.tasks.Task
    data: Any  # spul.data.splits.UnlearningData
    config: Any  # the method's config dataclass
    artifact_dir: Path  # where the artifact goes (replaced atomically)
    work_dir: Path  # the method's scratch space (checkpoints, logs)
    pretrained_model: str = ""  # the model before familiarisation (recorded in the metadata)
    resume: bool = True
    callbacks: list | None = None
    model_and_tokenizer: tuple | None = None  # the base model already loaded, when the caller has it
    familiarized_dir: Path | None = None  # OUTPUT/familiarized when the base is the familiarised model (recorded in spul.json)

    @property
    def base(self) -> str:
        return self.model.name_or_path


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type
    train: Callable[[TrainJob], Path]
    # load(folder, model, *, tokenizer, fingerprint, model_name, meta) -> Intervention
    load: Callable[..., Any]
    display: Callable[[dict[str, Any]], str]  # a results-table name from the artifact's metadata
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)  # config values this name implies (e.g. method: ga)


_METHODS: dict[str, Method] = {}
_loaded = False


def register_method(name: str, config_cls: type, train: Callable[[TrainJob], Path], load: Callable[..., Any],
                    display: Callable[[dict[str, Any]], str] | None = None, description: str = "",
                    defaults: dict[str, Any] | None = None) -> Method:
    """Register a method under ``name`` (re-registering the same name replaces it)."""
    method = Method(name, config_cls, train, load, display or (lambda meta, n=name: n), description, dict(defaults or {}))
    _METHODS[name] = method
    return method


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(module)


def method_names() -> list[str]:
    _load_builtin()
    return list(_METHODS)


def get_method(name: str) -> Method:
    _load_builtin()
    if name not in _METHODS:
        raise ConfigError(f"unlearning method {name!r} is unknown", f"use one of: {', '.join(_METHODS)}")
    return _METHODS[name]


def method_config(name: str, values: dict[str, Any] | None = None, prefix: str = "unlearn"):
    """The validated config of method ``name`` from plain values (YAML / overrides)."""
    from spul.configuration import from_dict

    if not _loaded and name in LIGHT_CONFIGS:
        module, cls_name, defaults = LIGHT_CONFIGS[name]
        config_cls = getattr(importlib.import_module(module), cls_name)
    else:
        method = get_method(name)
        config_cls, defaults = method.config_cls, method.defaults
    values = {**defaults, **dict(values or {})}
    values.pop("method", None)
    fields = {f for f in getattr(config_cls, "__dataclass_fields__", {})}
    if "method" in fields:
        values["method"] = name
    return from_dict(config_cls, values, prefix=prefix)


def method_of(config: Any) -> str:
    """The registered name of a method config object."""
    name = getattr(config, "method", None)
    name = getattr(name, "value", name)
    if isinstance(name, str):
        return name
    _load_builtin()
    for method in _METHODS.values():
        if type(config) is method.config_cls:
            return method.name
    raise ConfigError(f"{type(config).__name__} is not the config of a registered method", "use a method's own config class")


def load_intervention(folder: str | Path, model, *, tokenizer=None, fingerprint: str | None = None, model_name: str = "",
                      name: str | None = None):
    """The intervention that the artifact in ``folder`` applies to ``model`` (its base model is checked)."""
    from spul.artifacts import check_base, read_metadata
    from spul.models.loading import weights_fingerprint

    meta = read_metadata(folder)
    method = get_method(str(meta.get("method", "spul")))
    fingerprint = fingerprint or weights_fingerprint(model)
    check_base(meta, fingerprint, model_name or meta.get("base_model", ""))
    return method.load(Path(folder), model, tokenizer=tokenizer, meta=meta, name=name or method.display(meta))
