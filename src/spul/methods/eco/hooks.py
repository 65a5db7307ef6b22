"""ECO's embedding hook now lives with the other inference-time interventions (``spul.interventions.corruption``)."""

from spul.interventions.corruption import EmbeddingGuard

__all__ = ["EmbeddingGuard"]
