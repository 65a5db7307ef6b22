"""Pure loss functions shared by SPUL, the familiarisation fine-tune and the baselines.

Conventions: inputs are left-padded, so the positions that predict a row's answer tokens are the last
``K`` positions of the (prompt + answer[:-1]) input. ``labels`` is ``[B, K]``, right-aligned, with
``IGNORE`` where a row's answer is shorter than ``K``. Position ``-k`` of ``labels`` is predicted by the
hidden state at position ``-k`` of the input; the first answer token is predicted by the last prompt token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


def answer_positions(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select the hidden states that predict answer tokens.

    Returns ``(h [N, d], targets [N], rows [N])`` with one entry per real answer token, so the LM head runs on
    ``N`` vectors instead of ``B × T``.
    """
    k = labels.shape[1]
    if hidden.shape[1] < k:
        raise ValueError(f"input of length {hidden.shape[1]} is shorter than the answer length {k}")
    tail = hidden[:, hidden.shape[1] - k :, :]
    mask = labels != IGNORE
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)[mask]
    return tail[mask], labels[mask], rows


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood ``[N]`` of each target token under ``logits [N, V]``."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def per_row_mean(values: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean of ``values [N]`` within each row ``[B]``: a multi-token answer counts once, not once per token."""
    sums = torch.zeros(batch_size, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    counts = torch.zeros(batch_size, dtype=values.dtype, device=values.device).index_add(0, rows, torch.ones_like(values))
    return sums / counts.clamp(min=1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the rows where ``mask`` holds; exactly 0 (still in the graph) if none does."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def kl_base_to_prompted(prompted_logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_base ‖ q_prompted) per position ``[N]`` over the full vocabulary.

    Forward KL from the unprompted model: the prompted model is penalised wherever the base puts mass it
    drops, which keeps its whole predictive distribution (not just the argmax) on retain samples.
    """
    log_q = F.log_softmax(prompted_logits.float(), dim=-1)
    log_p = F.log_softmax(base_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@dataclass
class LossParts:
    total: torch.Tensor
    forget: torch.Tensor
    retain: torch.Tensor
    kl: torch.Tensor

    def detached(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "forget", "retain", "kl")}


def spul_loss(row_nll: torch.Tensor, is_forget: torch.Tensor, row_kl: torch.Tensor | None, alpha: float, beta: float) -> LossParts:
    """L = L_f + α·L_r + β·L_kl.

    ``row_nll`` is each row's NLL toward its target (a generic label for forget rows, the true label for
    retain rows); ``row_kl`` is each retain row's KL to the unprompted model (ignored for forget rows).
    """
    forget = masked_mean(row_nll, is_forget)
    retain = masked_mean(row_nll, ~is_forget)
    kl = masked_mean(row_kl, ~is_forget) if row_kl is not None else row_nll.new_zeros(())
    return LossParts(total=forget + alpha * retain + beta * kl, forget=forget, retain=retain, kl=kl)


def ascent_term(row_nll: torch.Tensor, is_forget: torch.Tensor, nll_cap: float | None = None) -> torch.Tensor:
    """Gradient-ascent objective on forget rows: −mean NLL of the true label (minimising it raises the NLL).

    GA is unbounded (the NLL can grow without limit and wreck the model), so each row's NLL is clamped at
    ``nll_cap``: a row whose NLL already exceeds the cap contributes a constant and no gradient.
    """
    nll = row_nll if nll_cap is None else row_nll.clamp(max=nll_cap)
    return -masked_mean(nll, is_forget)


def ga_loss(row_nll, is_forget, row_kl=None, retain_weight=1.0, kl_weight=1.0, nll_cap=None) -> LossParts:
    """GA: −L_f (capped NLL of the true label on forget rows)."""
    zero = row_nll.new_zeros(())
    forget = ascent_term(row_nll, is_forget, nll_cap)
    return LossParts(total=forget, forget=forget, retain=masked_mean(row_nll, ~is_forget), kl=zero)


def rl_loss(row_nll, is_forget, row_kl=None, retain_weight=1.0, kl_weight=1.0, nll_cap=None) -> LossParts:
    """RL: +L_f toward random generic labels."""
    zero = row_nll.new_zeros(())
    forget = masked_mean(row_nll, is_forget)
    return LossParts(total=forget, forget=forget, retain=zero, kl=zero)


def ga_kl_loss(row_nll, is_forget, row_kl=None, retain_weight=1.0, kl_weight=1.0, nll_cap=None) -> LossParts:
    """GA+KL: −L_f + kl_weight · KL(p_base ‖ q) on retain rows."""
    forget = ascent_term(row_nll, is_forget, nll_cap)
    kl = masked_mean(row_kl, ~is_forget) if row_kl is not None else row_nll.new_zeros(())
    return LossParts(total=forget + kl_weight * kl, forget=forget, retain=masked_mean(row_nll, ~is_forget), kl=kl)


def ga_gd_loss(row_nll, is_forget, row_kl=None, retain_weight=1.0, kl_weight=1.0, nll_cap=None) -> LossParts:
    """GA+GD: −L_f + retain_weight · CE on retain rows."""
    forget = ascent_term(row_nll, is_forget, nll_cap)
    retain = masked_mean(row_nll, ~is_forget)
    kl = masked_mean(row_kl, ~is_forget) if row_kl is not None else row_nll.new_zeros(())
    return LossParts(total=forget + retain_weight * retain, forget=forget, retain=retain, kl=kl)


BASELINE_LOSSES = {"ga": ga_loss, "rl": rl_loss, "ga_kl": ga_kl_loss, "ga_gd": ga_gd_loss}


def baseline_loss(method: str, row_nll: torch.Tensor, is_forget: torch.Tensor, row_kl: torch.Tensor | None = None,
                  retain_weight: float = 1.0, kl_weight: float = 1.0, nll_cap: float | None = None) -> LossParts:
    """The paper's four baselines by name (``row_nll`` is toward the true label for GA-style rows and toward a
    generic label for RL forget rows); the trainer uses the registered functions above directly."""
    if method not in BASELINE_LOSSES:
        raise ValueError(f"unknown baseline {method!r}")
    return BASELINE_LOSSES[method](row_nll, is_forget, row_kl, retain_weight, kl_weight, nll_cap)


def sequence_logprob(row_nll: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log π(y|x) of each row's whole answer from its per-token mean NLL and its answer length: −mean·|y|."""
    return -row_nll * lengths.to(row_nll.dtype)
