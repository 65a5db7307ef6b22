"""Answer scoring by comparing whole-word likelihoods of every candidate answer.

The prediction for a row is the candidate (task label or generic label) with the highest log-likelihood
``log P(answer tokens | prompt)``. Single-token answers cost one forward pass for all candidates; each
multi-token answer costs one more pass over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from spul.data.encoding import TaskEncoder
from spul.models.forward import hidden_states, lm_logits, pad_left

# (batch_size, row indices) -> (prompt [B, p, d] or None, prompt_rows [B] bool or None)
PromptProvider = Callable[[int, np.ndarray], tuple["torch.Tensor | None", "torch.Tensor | None"]]


@dataclass
class Scores:
    """Per-row log-likelihood of each candidate, ``[N, C]``; candidates as in ``Task.candidates``."""

    loglik: np.ndarray
    num_labels: int

    @property
    def predictions(self) -> np.ndarray:
        return self.loglik.argmax(axis=1)

    @property
    def is_generic(self) -> np.ndarray:
        return self.predictions >= self.num_labels

    def label_probabilities(self) -> np.ndarray:
        """Softmax over the task labels only (used for calibration-free comparisons, e.g. by ECO)."""
        x = self.loglik[:, : self.num_labels]
        x = x - x.max(axis=1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=1, keepdims=True)


def length_batches(prompts: list[list[int]], batch_size: int) -> list[np.ndarray]:
    """Row indices of each batch: rows sorted by token length (stable), cut into ``batch_size`` pieces."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def score_prompts(model, encoder: TaskEncoder, prompts: list[list[int]], batch_size: int = 32,
                  prompt_provider: PromptProvider | None = None, progress: bool = False, desc: str = "scoring",
                  shard: tuple[int, int] = (0, 1)) -> Scores:
    """Score every candidate answer for pre-encoded prompts. Rows are bucketed by length to cut padding.

    ``shard=(i, n)`` scores only batches ``i, i + n, i + 2n, ...`` of the length-sorted batches (one process of
    ``n``); the other rows stay NaN. Each batch holds the rows it holds for one process, so the union of the
    ``n`` shards is exactly the one-process result (``spul.evaluation.evaluate`` gathers them).
    """
    device = next(model.parameters()).device
    pad = encoder.tokenizer.pad_token_id
    candidates = encoder.candidate_ids
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count} is out of range")
    out = np.zeros((len(prompts), len(candidates)), dtype=np.float64)
    if count > 1:
        out[:] = np.nan
    batches = length_batches(prompts, batch_size)[index::count]
    first_ids = torch.tensor([c[0] for c in candidates], device=device)
    for rows in tqdm(batches, desc=desc, disable=not progress, leave=False):
        seqs = [prompts[i] for i in rows]
        prompt, prompt_rows = prompt_provider(len(rows), rows) if prompt_provider else (None, None)
        if prompt is None or prompt_rows is None or bool(prompt_rows.all()):
            out[rows] = _score_batch(model, seqs, candidates, first_ids, pad, device, prompt)
            continue
        # Rows without the prompt run as a separate, unprompted batch: bit-identical to the base model
        # (masking the prompt slots instead would perturb the last bits of the attention sums).
        on = prompt_rows.bool().cpu().numpy()
        if on.any():
            out[rows[on]] = _score_batch(model, [s for s, f in zip(seqs, on) if f], candidates, first_ids, pad, device,
                                         prompt[torch.as_tensor(on, device=prompt.device)])
        if (~on).any():
            out[rows[~on]] = _score_batch(model, [s for s, f in zip(seqs, on) if not f], candidates, first_ids, pad, device, None)
    return Scores(loglik=out, num_labels=encoder.task.num_labels)


def score_texts(model, encoder: TaskEncoder, texts: list[str], **kwargs) -> Scores:
    return score_prompts(model, encoder, encoder.encode_prompts(texts), **kwargs)


def _score_batch(model, seqs: list[list[int]], candidates: list[list[int]], first_ids: torch.Tensor, pad: int,
                 device, prompt: torch.Tensor | None) -> np.ndarray:
    """``[len(seqs), C]`` log-likelihoods of every candidate after each prompt in ``seqs``."""
    out = np.zeros((len(seqs), len(candidates)), dtype=np.float64)
    ids, mask = pad_left(seqs, pad, device)
    hidden = hidden_states(model, ids, mask, prompt)
    logp = torch.log_softmax(lm_logits(model, hidden[:, -1, :]), dim=-1)
    out[:] = logp[:, first_ids].double().cpu().numpy()
    for c, cand in enumerate(candidates):
        if len(cand) == 1:
            continue
        ids2, mask2 = pad_left([s + cand[:-1] for s in seqs], pad, device)
        hidden2 = hidden_states(model, ids2, mask2, prompt)
        k = len(cand)
        tail = hidden2[:, -k:, :].reshape(-1, hidden2.shape[-1])
        logp2 = torch.log_softmax(lm_logits(model, tail), dim=-1).view(len(seqs), k, -1)
        target = torch.tensor(cand, device=device).view(1, k, 1).expand(len(seqs), k, 1)
        out[:, c] = logp2.gather(2, target).squeeze(2).sum(1).double().cpu().numpy()
    return out
