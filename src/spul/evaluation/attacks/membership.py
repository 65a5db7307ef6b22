"""Membership inference on the forget set: can an attacker tell forget-set rows (seen in training) from
unseen rows of the same kind (the test forget split), with and without the unlearning applied?

Every score is oriented so that higher means "more likely a member"; the attack's strength is its ROC AUC
(0.5 = the attacker cannot tell). Scores: the text's mean token log-likelihood (loss attack), the total NLL
over the zlib-compressed length, Min-K% (mean of the k% least likely tokens), Min-K%++ (the same over
tokens standardised by the mean and spread of log-probabilities under the model's own next-token
distribution), and the log-likelihood of the true answer given the task prompt.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from spul.data.encoding import TaskEncoder
from spul.evaluation.evaluate import score_with
from spul.interventions import Intervention, as_provider
from spul.models.scoring import PromptProvider, Scores, score_texts
from spul.models.forward import hidden_states, lm_logits, pad_left

SCORES = ("loss", "zlib", "min_k", "min_k_pp", "answer_loglik")


@dataclass
class TokenStats:
    """Per-token log-probability of the text and its Min-K%++ standardised version."""

    logprob: np.ndarray
    zscore: np.ndarray


@torch.inference_mode()
def token_statistics(model, tokenizer, texts: list[str], provider: PromptProvider | Intervention | None = None,
                     batch_size: int = 16, max_length: int = 256) -> list[TokenStats]:
    """Log-probabilities of every text token after the first, with an intervention (or a prompt provider) applied."""
    encoded = [list(ids[:max_length]) for ids in tokenizer(texts, add_special_tokens=True).input_ids]
    if isinstance(provider, Intervention):
        with provider.applied(model, texts, encoded) as hook:
            return _token_statistics(model, tokenizer, encoded, as_provider(provider, hook), batch_size)
    return _token_statistics(model, tokenizer, encoded, provider, batch_size)


def _token_statistics(model, tokenizer, encoded: list[list[int]], provider: PromptProvider | None, batch_size: int) -> list[TokenStats]:
    device = next(model.parameters()).device
    texts = encoded
    out: list[TokenStats | None] = [None] * len(texts)
    order = np.argsort([len(e) for e in encoded], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_left([encoded[i] for i in rows], tokenizer.pad_token_id, device)
        prompt, prompt_rows = provider(len(rows), rows) if provider else (None, None)
        hidden = hidden_states(model, ids, mask, prompt, prompt_rows)[:, -ids.shape[1]:, :]
        valid = (mask[:, 1:] * mask[:, :-1]).bool()
        logp = torch.log_softmax(lm_logits(model, hidden[:, :-1, :][valid]), dim=-1)
        target = ids[:, 1:][valid]
        tok = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
        z = (tok - mu) / sigma
        which = valid.nonzero()[:, 0]
        for b, i in enumerate(rows):
            sel = which == b
            out[i] = TokenStats(tok[sel].double().cpu().numpy(), z[sel].double().cpu().numpy())
    return out  # type: ignore[return-value]


def _lowest_mean(values: np.ndarray, k: float) -> float:
    if values.size == 0:
        return 0.0
    n = max(1, int(round(values.size * k)))
    return float(np.sort(values)[:n].mean())


def member_scores(texts: list[str], stats: list[TokenStats], k: float = 0.2) -> dict[str, np.ndarray]:
    """Higher = more likely a training member, for each text-level attack."""
    loss = np.array([s.logprob.mean() if s.logprob.size else 0.0 for s in stats])
    zlib_len = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.float64)
    return {
        "loss": loss,
        "zlib": np.array([s.logprob.sum() for s in stats]) / zlib_len,
        "min_k": np.array([_lowest_mean(s.logprob, k) for s in stats]),
        "min_k_pp": np.array([_lowest_mean(s.zscore, k) for s in stats]),
    }


def auc(member: np.ndarray, nonmember: np.ndarray) -> float:
    y = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    s = np.r_[member, nonmember]
    if len(set(y)) < 2 or not np.isfinite(s).all():
        return float("nan")
    return float(roc_auc_score(y, s))


def membership_aucs(model, encoder: TaskEncoder, members: tuple[list[str], np.ndarray], nonmembers: tuple[list[str], np.ndarray],
                    provider: PromptProvider | Intervention | None = None, k: float = 0.2, batch_size: int = 16) -> dict[str, float]:
    """ROC AUC of each attack separating ``members`` from ``nonmembers`` (each: texts, true label ids)."""
    scores: list[dict[str, np.ndarray]] = []
    for texts, labels in (members, nonmembers):
        stats = token_statistics(model, encoder.tokenizer, texts, provider, batch_size, encoder.max_length)
        s = member_scores(texts, stats, k)
        answer = _score(model, encoder, texts, provider, batch_size)
        s["answer_loglik"] = answer.loglik[np.arange(len(texts)), labels]
        scores.append(s)
    return {name: auc(scores[0][name], scores[1][name]) for name in SCORES}


def _score(model, encoder: TaskEncoder, texts: list[str], provider, batch_size: int) -> Scores:
    if isinstance(provider, Intervention):
        return score_with(model, encoder, texts, provider, batch_size=batch_size)
    return score_texts(model, encoder, texts, batch_size=batch_size, prompt_provider=provider)
