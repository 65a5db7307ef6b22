"""Data-layer configuration: the split names and where the splits come from (no pandas/torch imports, so a
config file is validated before the heavy libraries load)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from spul.errors import ConfigError


class Split(str, enum.Enum):
    TRAIN_FORGET = "train_forget"
    TRAIN_RETAIN = "train_retain"
    TEST_FORGET = "test_forget"
    TEST_RETAIN = "test_retain"

    @property
    def is_forget(self) -> bool:
        return self.value.endswith("forget")

    @property
    def is_train(self) -> bool:
        return self.value.startswith("train")

    @property
    def symbol(self) -> str:
        """The paper's notation, e.g. ``D_f^tr``."""
        return f"D_{'f' if self.is_forget else 'r'}^{'tr' if self.is_train else 'te'}"


SPLITS: tuple[Split, ...] = (Split.TRAIN_RETAIN, Split.TRAIN_FORGET, Split.TEST_RETAIN, Split.TEST_FORGET)


@dataclass
class DataConfig:
    """Where the four splits come from and which columns hold the text and the label."""

    source: str = "generated:reviews"
    files: dict[str, str] = field(default_factory=dict)
    text_column: str = "text"
    label_column: str = "label"
    # at most this many rows per split (e.g. {train_retain: 2000}); sampled reproducibly with ``seed``
    limits: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    revision: str | None = None

    def __post_init__(self) -> None:
        valid = {s.value for s in SPLITS}
        for name, mapping in (("files", self.files), ("limits", self.limits)):
            bad = sorted(set(mapping) - valid)
            if bad:
                raise ConfigError(f"data.{name} has unknown split {bad[0]!r}", f"use split names {sorted(valid)}")
        for split, n in self.limits.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"data.limits.{split} must be a positive integer, got {n!r}", "write e.g. data.limits.train_retain=2000")
        if not self.source and len(self.files) < 4:
            raise ConfigError("data.source is empty", "name a source (generated:reviews, a folder, or hub:OWNER/NAME)")
