"""Data: tasks (how a row becomes a prompt and an answer), sources, and forget/retain splits."""

from spul._lazy import lazy_exports
from spul.data.config import SPLITS, Split
from spul.data.tasks import PAPER_TEMPLATE, Task, TaskConfig, TaskKind

__all__ = ["SPLITS", "Split", "UnlearningData", "Task", "TaskConfig", "TaskKind", "PAPER_TEMPLATE"]
__getattr__ = lazy_exports(__name__, {"UnlearningData": "spul.data.splits"})
