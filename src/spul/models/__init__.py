"""Models: loading causal LMs (hub, local, packaged offline), fingerprints, soft prompts, forward passes."""

from spul.models.loading import ModelConfig, load_model, load_tokenizer, weights_fingerprint

__all__ = ["ModelConfig", "load_model", "load_tokenizer", "weights_fingerprint"]
