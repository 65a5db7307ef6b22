"""Models: loading causal LMs (hub, local, packaged offline), fingerprints, soft prompts, forward passes."""

from spul._lazy import lazy_exports
from spul.models.config import ModelConfig

__all__ = ["ModelConfig", "load_model", "load_tokenizer", "weights_fingerprint"]
__getattr__ = lazy_exports(__name__, {n: "spul.models.loading" for n in ("load_model", "load_tokenizer", "weights_fingerprint")})
