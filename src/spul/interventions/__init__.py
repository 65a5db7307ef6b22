"""What an unlearning artifact applies to a frozen model at inference (see ``base.py``).

Exports resolve on first use (``spul._lazy``), so the light ``corruption_config`` loads without torch.
"""

from spul._lazy import lazy_exports

_EXPORTS = {
    **{n: "spul.interventions.base" for n in ("Gated", "Intervention", "RowHook", "SoftPrompt", "as_provider", "prompt_batch")},
    **{n: "spul.interventions.corruption" for n in ("Corruption", "EmbeddingCorruption", "EmbeddingGuard")},
    "CorruptionConfig": "spul.interventions.corruption_config",
    "DeepPrompt": "spul.interventions.deep_prompt",
    **{n: "spul.interventions.weights" for n in ("LoraDelta", "WeightSwap")},
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
