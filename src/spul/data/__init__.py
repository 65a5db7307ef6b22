"""Data: tasks (how a row becomes a prompt and an answer), sources, and forget/retain splits."""

from spul.data.splits import SPLITS, Split, UnlearningData
from spul.data.tasks import PAPER_TEMPLATE, Task, TaskConfig, TaskKind

__all__ = ["SPLITS", "Split", "UnlearningData", "Task", "TaskConfig", "TaskKind", "PAPER_TEMPLATE"]
