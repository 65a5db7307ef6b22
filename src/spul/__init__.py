"""spul: inference-time unlearning for large language models, without touching the weights.

The pipeline steps are importable from here (``spul.run``, ``spul.unlearn``, ``spul.RunConfig``, ...); they
load lazily so that ``import spul`` and the CLI start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "RunConfig": "spul.run_config",
    "prepare": "spul.pipeline",
    "finetune": "spul.pipeline",
    "unlearn": "spul.pipeline",
    "evaluate": "spul.pipeline",
    "run": "spul.pipeline",
    "load_config": "spul.configuration",
    "load_model": "spul.models.loading",
    "ModelConfig": "spul.models.config",
    "load_unlearning_data": "spul.data.sources",
    "DataConfig": "spul.data.config",
    "Task": "spul.data.tasks",
    "TaskConfig": "spul.data.tasks",
    "SpulConfig": "spul.methods.spul.config",
    "load_soft_prompt": "spul.artifacts",
    "SpulError": "spul.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spul' has no attribute {name!r}")
