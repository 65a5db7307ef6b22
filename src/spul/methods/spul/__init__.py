"""SPUL: soft-prompt unlearning (Bhaila et al., arXiv 2406.12038)."""

from spul._lazy import lazy_exports
from spul.methods.spul.config import SpulConfig

__all__ = ["SpulArguments", "SpulConfig", "SpulTrainer"]
__getattr__ = lazy_exports(__name__, {"SpulArguments": "spul.methods.spul.arguments", "SpulTrainer": "spul.methods.spul.trainer"})
