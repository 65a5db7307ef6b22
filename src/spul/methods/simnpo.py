"""SimNPO: reference-free, length-normalised NPO.

Loss on forget rows: −(2/β)·log σ(−(β/|y|)·log π_θ(y|x) − γ); plus ``retain_weight`` × NLL on retain rows.
(β/|y|)·log π_θ(y|x) is −β times the answer's mean token NLL, so no reference model is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from spul.errors import ConfigError
from spul.methods.baselines.config import WeightConfig
from spul.methods.baselines.trainer import load_weights, train_weights
from spul.methods.losses import LossParts, masked_mean
from spul.methods.npo import examples
from spul.methods.registry import TrainJob, register_method


@dataclass
class SimNpoConfig(WeightConfig):
    method: str = field(default="simnpo", metadata={"help": "the registered method these settings are for"})
    beta: float = field(default=2.5, metadata={"help": "inverse temperature β"})
    gamma: float = field(default=0.0, metadata={"help": "reward margin γ"})

    section = "simnpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ConfigError(f"{self.section}.beta={self.beta} is invalid", "use a positive β such as 2.5")


def simnpo_loss(row_nll: torch.Tensor, is_forget: torch.Tensor, beta: float, gamma: float = 0.0,
                retain_weight: float = 1.0) -> LossParts:
    """SimNPO over rows; ``row_nll`` is each answer's mean token NLL, i.e. −log π_θ(y|x)/|y|."""
    length_normalised_logp = -row_nll
    forget_rows = -(2.0 / beta) * F.logsigmoid(-beta * length_normalised_logp - gamma)
    forget = masked_mean(forget_rows, is_forget)
    retain = masked_mean(row_nll, ~is_forget)
    return LossParts(total=forget + retain_weight * retain, forget=forget, retain=retain, kl=row_nll.new_zeros(()))


def objective(trainer, model, inputs) -> LossParts:
    cfg = trainer.config
    return simnpo_loss(trainer.answer_nll(model, inputs), inputs["is_forget"], cfg.beta, cfg.gamma, cfg.retain_weight)


def train(job: TrainJob):
    return train_weights(job, objective, examples)


register_method("simnpo", SimNpoConfig, train, load_weights, lambda meta: "SimNPO", "reference-free, length-normalised NPO")
