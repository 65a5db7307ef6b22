"""SPUL: soft-prompt unlearning (Bhaila et al., arXiv 2406.12038)."""

from spul.methods.spul.config import SpulArguments, SpulConfig
from spul.methods.spul.trainer import SpulTrainer

__all__ = ["SpulArguments", "SpulConfig", "SpulTrainer"]
