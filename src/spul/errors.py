"""User-facing errors.

Every mistake a user can make (bad config, bad data, wrong artifact) raises a ``SpulError`` whose message is
one line naming the problem and the fix. The CLI prints that line and exits non-zero instead of a traceback.
"""

from __future__ import annotations


class SpulError(Exception):
    """A problem the user can fix; ``str(err)`` is a single line saying what and how."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        problem = " ".join(str(problem).split())
        message = f"{problem} — fix: {' '.join(fix.split())}" if fix else problem
        super().__init__(message)
        self.problem = problem
        self.fix = fix


class ConfigError(SpulError):
    """An invalid configuration value or file."""


class DataError(SpulError):
    """Missing, malformed or inconsistent data."""


class ModelError(SpulError):
    """A model or tokenizer that cannot be loaded or used for the task."""


class ArtifactError(SpulError):
    """An unlearning artifact that is missing, corrupt or belongs to another base model."""


class TrainingError(SpulError):
    """Training that cannot go on (NaN loss, out of memory)."""
