"""ECO: embedding-corrupted prompts (Liu et al., arXiv 2406.07933).

A prompt classifier flags inputs that belong to the forget target; for flagged prompts only, a forward hook
on the embedding layer corrupts the prompt's input embeddings at prefill. The corruption strength σ is
tuned offline by zeroth-order search. Model weights never change.
"""

from spul.methods.eco.config import (ClassifierConfig, ConformalSide, CorruptionConfig, DimSelect, EcoConfig,
                                     ObjectiveTarget, SearchConfig)
from spul.methods.eco.conformal import conformal_threshold
from spul.methods.eco.corruptions import CORRUPTIONS, Corruption, register_corruption
from spul.methods.eco.hooks import EmbeddingGuard

__all__ = [
    "CORRUPTIONS", "ClassifierConfig", "ConformalSide", "Corruption", "CorruptionConfig", "DimSelect", "EcoConfig",
    "EmbeddingGuard", "ObjectiveTarget", "SearchConfig", "conformal_threshold", "register_corruption",
]
