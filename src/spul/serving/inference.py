"""Model calls behind the server: candidate scoring and greedy generation, with a cached soft-prompt prefix.

A soft prompt sits at positions ``0..p-1`` of every row (``spul.models.forward.hidden_states`` puts it before
the left padding), so its keys/values are the same for every request. ``PrefixCache`` computes them once per
artifact (``spul.models.prefix_cache.PrefixCache``) and every batch reuses them; only the request tokens run
through the decoder. Scoring without a
cache calls ``spul.models.scoring.score_prompts`` itself, so the two paths can be compared directly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from spul.data.encoding import TaskEncoder
from spul.models.scoring import score_prompts
from spul.models.forward import decoder_of, hidden_states, lm_logits, pad_left, unwrap
from spul.models.prefix_cache import PrefixCache, run_after_prefix

RowHook = Callable[[np.ndarray], None]


def _run(model, ids: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor | None, prefix: PrefixCache | None,
         use_cache: bool = False):
    """Hidden states of the request tokens ``[B, T, d]`` (prompt positions dropped) and the decoder cache."""
    if vectors is None or prefix is None:
        prompt = vectors.unsqueeze(0).expand(ids.shape[0], -1, -1) if vectors is not None else None
        if not use_cache:
            hidden = hidden_states(model, ids, mask, prompt)
            return hidden[:, -ids.shape[1]:, :], None, None
        # generation without a prefix cache: the same inputs as hidden_states, but keep the cache
        base = unwrap(model)
        embeds = base.get_input_embeddings()(ids)
        full_mask = mask
        if prompt is not None:
            embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
            full_mask = torch.cat([mask.new_ones(prompt.shape[:2]), mask], dim=1)
        positions = (full_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = decoder_of(model)(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions, use_cache=True)
        return out.last_hidden_state[:, -ids.shape[1]:, :], out.past_key_values, full_mask
    out, full_mask = run_after_prefix(model, prefix.layers, ids, mask)
    return out.last_hidden_state, (out.past_key_values if use_cache else None), full_mask


@torch.inference_mode()
def score(model, encoder: TaskEncoder, prompts: list[list[int]], vectors: torch.Tensor | None = None,
          prefix: PrefixCache | None = None, batch_size: int = 32, row_hook: RowHook | None = None) -> np.ndarray:
    """Log-likelihood ``[N, C]`` of every candidate answer, computed as ``score_prompts`` computes it.

    ``row_hook(rows)`` is called before each batch with the indices (into ``prompts``) of its rows, e.g. so an
    ECO guard knows which rows of the coming forward pass are flagged; it runs the uncached path.
    """
    if prefix is None or row_hook is not None:
        def provider(n, rows):
            mask = row_hook(np.asarray(rows)) if row_hook is not None else None
            if vectors is None:
                return None, None
            return vectors.unsqueeze(0).expand(n, -1, -1), (None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool)))

        return score_prompts(model, encoder, prompts, batch_size=batch_size, prompt_provider=provider).loglik
    device = next(model.parameters()).device
    pad = encoder.tokenizer.pad_token_id
    out = np.zeros((len(prompts), len(encoder.candidate_ids)), dtype=np.float64)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    first_ids = torch.tensor([c[0] for c in encoder.candidate_ids], device=device)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        seqs = [prompts[i] for i in rows]
        ids, mask = pad_left(seqs, pad, device)
        hidden, _, _ = _run(model, ids, mask, vectors, prefix)
        out[rows] = torch.log_softmax(lm_logits(model, hidden[:, -1, :]), dim=-1)[:, first_ids].double().cpu().numpy()
        for c, cand in enumerate(encoder.candidate_ids):
            if len(cand) == 1:
                continue
            ids2, mask2 = pad_left([s + cand[:-1] for s in seqs], pad, device)
            hidden2, _, _ = _run(model, ids2, mask2, vectors, prefix)
            k = len(cand)
            logp = torch.log_softmax(lm_logits(model, hidden2[:, -k:, :].reshape(-1, hidden2.shape[-1])), dim=-1).view(len(rows), k, -1)
            target = torch.tensor(cand, device=device).view(1, k, 1).expand(len(rows), k, 1)
            out[rows, c] = logp.gather(2, target).squeeze(2).sum(1).double().cpu().numpy()
    return out


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: list[int], vectors: torch.Tensor | None = None,
             prefix: PrefixCache | None = None, row_hook: RowHook | None = None) -> list[list[int]]:
    """Greedy continuation of each prompt (left-padded batch), each row stopping at EOS or its own limit."""
    device = next(model.parameters()).device
    on = row_hook(np.arange(len(prompts))) if row_hook is not None else None
    if vectors is not None and on is not None and not np.all(on):
        # a gated soft prompt: the rows it applies to and the others are generated as two groups
        on = np.asarray(on, dtype=bool)
        outputs: list[list[int]] = [[] for _ in prompts]
        for group, vec, pre in ((np.flatnonzero(on), vectors, prefix), (np.flatnonzero(~on), None, None)):
            if len(group):
                for i, out in zip(group, generate(model, tokenizer, [prompts[i] for i in group], [max_new_tokens[i] for i in group], vec, pre)):
                    outputs[i] = out
        return outputs
    ids, mask = pad_left(prompts, tokenizer.pad_token_id, device)
    hidden, cache, full_mask = _run(model, ids, mask, vectors, prefix, use_cache=True)
    eos = tokenizer.eos_token_id
    steps = max(max_new_tokens)
    limits = torch.tensor(max_new_tokens, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    outputs: list[list[int]] = [[] for _ in prompts]
    base = unwrap(model)
    for step in range(steps):
        next_ids = lm_logits(model, hidden[:, -1, :]).argmax(-1)
        for row in range(len(prompts)):
            if not done[row]:
                if eos is not None and int(next_ids[row]) == eos:
                    done[row] = True
                else:
                    outputs[row].append(int(next_ids[row]))
        done |= (step + 1) >= limits
        if bool(done.all()) or step + 1 == steps:
            break
        full_mask = torch.cat([full_mask, full_mask.new_ones((len(prompts), 1))], dim=1)
        positions = (full_mask.long().sum(-1, keepdim=True) - 1)
        embeds = base.get_input_embeddings()(next_ids.unsqueeze(1))
        out = decoder_of(model)(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions,
                                past_key_values=cache, use_cache=True)
        hidden, cache = out.last_hidden_state, out.past_key_values
    return outputs
