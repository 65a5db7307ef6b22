"""IDK-DPO: direct preference optimisation toward a refusal / generic answer over the true one.

For a forget row, y_w = a generic answer (the task's generic label, e.g. "unknown": the "I don't know" of a
classification task), y_l = the true answer. Loss: −log σ(β·[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) −
log π_ref(y_l))]) with π_ref the frozen familiarised model (adapter disabled); plus ``retain_weight`` × NLL on
retain rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from spul.errors import ConfigError
from spul.methods.baselines.config import WeightConfig
from spul.methods.baselines.trainer import load_weights, train_weights
from spul.methods.losses import IGNORE, LossParts, masked_mean, sequence_logprob
from spul.methods.registry import TrainJob, register_method
from spul.methods.training import AnswerCollator, AnswerDataset, build_examples, generic_choices

ALT_ROW_OFFSET = 1 << 40  # the preferred answers' keys in the reference cache, apart from the true answers'


@dataclass
class IdkDpoConfig(WeightConfig):
    method: str = field(default="idk_dpo", metadata={"help": "the registered method these settings are for"})
    beta: float = field(default=0.1, metadata={"help": "inverse temperature β of the DPO loss"})

    section = "idk_dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ConfigError(f"{self.section}.beta={self.beta} is invalid", "use a positive β such as 0.1")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Per-row DPO loss −log σ(β·((π_c − ref_c) − (π_r − ref_r))) over sequence log-probabilities."""
    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))


def idk_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, row_nll, is_forget, beta: float,
                 retain_weight: float = 1.0) -> LossParts:
    """DPO on forget rows (chosen = generic answer, rejected = true answer) + retain NLL."""
    forget = masked_mean(dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta), is_forget)
    retain = masked_mean(row_nll, ~is_forget)
    return LossParts(total=forget + retain_weight * retain, forget=forget, retain=retain, kl=row_nll.new_zeros(()))


class PairDataset(AnswerDataset):
    """Rows plus, for forget rows, the preferred (generic) answer ``alt_target_ids``."""

    def __init__(self, examples, alternatives: list[list[int]]):
        super().__init__(examples)
        self.alternatives = alternatives

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = super().__getitem__(i)
        row["prompt_ids"] = self.examples[i].prompt_ids
        row["alt_target_ids"] = self.alternatives[i]
        return row


class PairCollator(AnswerCollator):
    def __call__(self, rows):
        batch = super().__call__(rows)
        alt = [{"input_ids": r["prompt_ids"] + r["alt_target_ids"][:-1], "target_ids": r["alt_target_ids"], "label": r["label"],
                "is_forget": r["is_forget"], "row_id": r["row_id"] + ALT_ROW_OFFSET} for r in rows]
        other = super().__call__(alt)
        batch.update({f"alt_{k}": other[k] for k in ("input_ids", "attention_mask", "labels", "row_id")})
        return batch


def _alt(inputs):
    return {**inputs, **{k: inputs[f"alt_{k}"] for k in ("input_ids", "attention_mask", "labels", "row_id")}}


def objective(trainer, model, inputs) -> LossParts:
    cfg = trainer.config
    forget = inputs["is_forget"]
    alt = _alt(inputs)
    row_nll = trainer.answer_nll(model, inputs)  # true answers (rejected on forget rows; the retain target)
    alt_nll = trainer.answer_nll(model, alt)  # generic answers (chosen)
    len_true = (inputs["labels"] != IGNORE).sum(1)
    len_alt = (alt["labels"] != IGNORE).sum(1)
    zeros = torch.zeros_like(row_nll)
    ref_true, ref_alt = zeros.clone(), zeros.clone()
    if bool(forget.any()):
        ref_true[forget] = sequence_logprob(trainer.reference_row_nll(model, inputs, forget), len_true[forget]).to(zeros.dtype)
        ref_alt[forget] = sequence_logprob(trainer.reference_row_nll(model, alt, forget), len_alt[forget]).to(zeros.dtype)
    return idk_dpo_loss(sequence_logprob(alt_nll, len_alt), sequence_logprob(row_nll, len_true), ref_alt, ref_true,
                        row_nll, forget, cfg.beta, cfg.retain_weight)


def pair_examples(data, encoder, cfg):
    """Forget rows (true answer = rejected) and retain rows (when the retain term is on), each with a seeded
    generic answer (the chosen one; unused on retain rows)."""
    rows = build_examples(data, encoder, forget_target="true", seed=cfg.seed, include_retain=cfg.retain_weight > 0)
    picks = generic_choices(len(rows), len(encoder.generic_ids), cfg.seed)
    return rows, [encoder.generic_ids[int(g)] for g in picks]


def train(job: TrainJob):
    built: dict[str, Any] = {}

    def examples(data, encoder, cfg):
        rows, built["alternatives"] = pair_examples(data, encoder, cfg)
        return rows

    return train_weights(job, objective, examples, dataset=lambda rows: PairDataset(rows, built["alternatives"]),
                         collator=PairCollator, needs_reference=True)


register_method("idk_dpo", IdkDpoConfig, train, load_weights, lambda meta: "IDK-DPO",
                "DPO toward the generic (\"I don't know\") answer over the true one")
