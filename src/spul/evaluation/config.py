"""Evaluation settings (light: validated before torch loads)."""

from __future__ import annotations

from dataclasses import dataclass, field

from spul.data.config import SPLITS
from spul.errors import ConfigError


@dataclass
class EvalConfig:
    batch_size: int = 32
    splits: list[str] = field(default_factory=lambda: [s.value for s in SPLITS])
    # also evaluate the pretrained model before familiarisation (the paper's "Vanilla" row)
    include_vanilla: bool = False
    cache: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"evaluation.batch_size={self.batch_size} is invalid", "use 1 or more")
        valid = {s.value for s in SPLITS}
        bad = [s for s in self.splits if s not in valid]
        if bad or not self.splits:
            raise ConfigError(f"evaluation.splits has unknown or no split {bad[:1]}", f"use some of {sorted(valid)}")
