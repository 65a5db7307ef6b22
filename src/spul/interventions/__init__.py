"""What an unlearning artifact applies to a frozen model at inference (see ``base.py``)."""

from spul.interventions.base import Gated, Intervention, RowHook, SoftPrompt, as_provider, prompt_batch
from spul.interventions.corruption import Corruption, CorruptionConfig, EmbeddingCorruption, EmbeddingGuard
from spul.interventions.weights import LoraDelta, WeightSwap

__all__ = ["Corruption", "CorruptionConfig", "EmbeddingCorruption", "EmbeddingGuard", "Gated", "Intervention", "LoraDelta",
           "RowHook", "SoftPrompt", "WeightSwap", "as_provider", "prompt_batch"]
