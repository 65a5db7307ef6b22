"""NPO: negative preference optimisation (forget answers pushed below the frozen reference's likelihood).

Loss on forget rows: −(2/β)·log σ(−β·(log π_θ(y|x) − log π_ref(y|x))), with π_ref the familiarised model the
unlearning starts from (the same model with its LoRA adapter disabled); plus ``retain_weight`` × NLL on retain
rows. Unlike GA it saturates: once π_θ(y|x) ≪ π_ref(y|x) a row stops pushing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from spul.errors import ConfigError
from spul.methods.baselines.config import WeightConfig
from spul.methods.baselines.trainer import load_weights, train_weights
from spul.methods.losses import IGNORE, LossParts, masked_mean, sequence_logprob
from spul.methods.registry import TrainJob, register_method
from spul.methods.training import build_examples


@dataclass
class NpoConfig(WeightConfig):
    method: str = field(default="npo", metadata={"help": "the registered method these settings are for"})
    beta: float = field(default=0.1, metadata={"help": "inverse temperature β of the NPO loss"})

    section = "npo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ConfigError(f"{self.section}.beta={self.beta} is invalid", "use a positive β such as 0.1")


def npo_loss(policy_logp: torch.Tensor, ref_logp: torch.Tensor, row_nll: torch.Tensor, is_forget: torch.Tensor,
             beta: float, retain_weight: float = 1.0) -> LossParts:
    """NPO over rows: ``policy_logp``/``ref_logp`` are log π(y|x) of each row's whole answer, ``row_nll`` the
    per-token NLL used by the retain term."""
    forget_rows = -(2.0 / beta) * F.logsigmoid(-beta * (policy_logp - ref_logp))
    forget = masked_mean(forget_rows, is_forget)
    retain = masked_mean(row_nll, ~is_forget)
    zero = row_nll.new_zeros(())
    return LossParts(total=forget + retain_weight * retain, forget=forget, retain=retain, kl=zero)


def answer_lengths(labels: torch.Tensor) -> torch.Tensor:
    return (labels != IGNORE).sum(1)


def objective(trainer, model, inputs) -> LossParts:
    cfg = trainer.config
    row_nll = trainer.answer_nll(model, inputs)
    forget = inputs["is_forget"]
    lengths = answer_lengths(inputs["labels"])
    policy_logp = sequence_logprob(row_nll, lengths)
    ref_logp = torch.zeros_like(policy_logp)
    if bool(forget.any()):
        ref_logp = ref_logp.clone()
        ref_logp[forget] = sequence_logprob(trainer.reference_row_nll(model, inputs, forget), lengths[forget]).to(ref_logp.dtype)
    return npo_loss(policy_logp, ref_logp, row_nll, forget, cfg.beta, cfg.retain_weight)


def examples(data, encoder, cfg):
    """Forget rows with their true answers; retain rows too when the retain term is on."""
    return build_examples(data, encoder, forget_target="true", seed=cfg.seed, include_retain=cfg.retain_weight > 0)


def train(job: TrainJob):
    return train_weights(job, objective, examples, needs_reference=True)


register_method("npo", NpoConfig, train, load_weights, lambda meta: "NPO", "negative preference optimisation against the frozen reference")
