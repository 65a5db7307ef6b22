"""The paper's fine-tuning baselines: GA, RL, GA+KL and GA+GD, with LoRA or full fine-tuning."""

from spul.methods.baselines.config import BaselineConfig, BaselineMethod, Tuning
from spul.methods.baselines.trainer import BaselineTrainer, load_baseline, train_baseline

__all__ = ["BaselineConfig", "BaselineMethod", "BaselineTrainer", "Tuning", "load_baseline", "train_baseline"]
