"""ECO's corruption settings, importable without torch: a config is validated before the heavy imports."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from spul.errors import ConfigError

# the corruptions spul.interventions.corruption registers itself; checked here without importing it (torch)
BUILTIN_CORRUPTIONS = ("noise", "zero", "sign_flip")
# every registered corruption's name: the built-in ones, plus those ``register_corruption`` adds
CORRUPTION_NAMES: set[str] = set(BUILTIN_CORRUPTIONS)


class DimSelect(str, enum.Enum):
    """Which embedding dimensions a corruption touches: the first n, n random ones (seeded), or the top-k by |x|."""

    FIRST = "first"
    RANDOM = "random"
    TOP_K = "top_k"


@dataclass
class CorruptionConfig:
    """One registered corruption applied to the selected dimensions of flagged prompts' embeddings."""

    name: str = "noise"  # a key of spul.interventions.corruption.CORRUPTIONS
    dims: int = 0  # how many dimensions to corrupt; 0 = all of them
    select: DimSelect = DimSelect.FIRST
    sigma: float = 0.1  # strength (noise standard deviation); the start point of the search
    seed: int = 0

    def __post_init__(self) -> None:
        self.select = DimSelect(self.select)
        if self.name not in CORRUPTION_NAMES:
            raise ConfigError(f"eco.corruption.name={self.name!r} is unknown", f"use one of: {', '.join(sorted(CORRUPTION_NAMES))}")
        if self.dims < 0:
            raise ConfigError(f"eco.corruption.dims={self.dims} is negative", "use 0 (all dimensions) or a positive count")
        if not self.sigma > 0:
            raise ConfigError(f"eco.corruption.sigma={self.sigma} is invalid", "use a positive strength")
