"""ECO: embedding-corrupted prompts (Liu et al., arXiv 2406.07933).

A prompt classifier flags inputs that belong to the forget target; for flagged prompts only, a forward hook
on the embedding layer corrupts the prompt's input embeddings at prefill. The corruption strength σ is
tuned offline by zeroth-order search. Model weights never change.
"""

from spul._lazy import lazy_exports
from spul.methods.eco.config import (ClassifierConfig, ConformalSide, CorruptionConfig, DimSelect, EcoConfig,
                                     ObjectiveTarget, SearchConfig)

__all__ = [
    "CORRUPTIONS", "ClassifierConfig", "ConformalSide", "Corruption", "CorruptionConfig", "DimSelect", "EcoConfig",
    "EmbeddingGuard", "ObjectiveTarget", "SearchConfig", "conformal_threshold", "register_corruption",
]
__getattr__ = lazy_exports(__name__, {
    "conformal_threshold": "spul.methods.eco.conformal", "EmbeddingGuard": "spul.methods.eco.hooks",
    **{n: "spul.methods.eco.corruptions" for n in ("CORRUPTIONS", "Corruption", "register_corruption")},
})
