"""Familiarisation: LoRA (QLoRA on CUDA) fine-tuning of the base model on forget ∪ retain."""

from spul._lazy import lazy_exports
from spul.methods.finetune.config import FinetuneConfig

__all__ = ["FinetuneConfig", "FinetuneTrainer", "familiarize"]
__getattr__ = lazy_exports(__name__, {"FinetuneTrainer": "spul.methods.finetune.trainer", "familiarize": "spul.methods.finetune.trainer"})
