"""Familiarisation: LoRA (QLoRA on CUDA) fine-tuning of the base model on forget ∪ retain."""

from spul.methods.finetune.config import FinetuneConfig
from spul.methods.finetune.trainer import FinetuneTrainer, familiarize

__all__ = ["FinetuneConfig", "FinetuneTrainer", "familiarize"]
