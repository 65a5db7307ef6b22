"""Model calls behind the server: candidate scoring and generation (``model.generate``), with a cached soft-prompt prefix.

A soft prompt sits at positions ``0..p-1`` of every row (``spul.models.forward.hidden_states`` puts it before
the left padding), so its keys/values are the same for every request. ``PrefixCache`` computes them once per
artifact (``spul.models.prefix_cache.PrefixCache``) and every batch reuses them; only the request tokens run
through the decoder. Scoring without a
cache calls ``spul.models.scoring.score_prompts`` itself, so the two paths can be compared directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig, StoppingCriteriaList

from spul.data.encoding import TaskEncoder
from spul.models.scoring import score_prompts
from spul.models.forward import decoder_of, hidden_states, lm_logits, pad_left, unwrap
from spul.models.prefix_cache import PrefixCache, expanded_cache, prefix_key_values, run_after_prefix

RowHook = Callable[[np.ndarray], None]


def _run(model, ids: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor | None, prefix: PrefixCache | None,
         prompt_rows: torch.Tensor | None = None):
    """Hidden states of the request tokens ``[B, T, d]`` (prompt positions dropped). ``prefix`` alone (no
    ``vectors``): a deep prompt's own per-layer keys/values (``DeepPrompt.prefix``); ``prompt_rows`` the rows
    that get it (a gated deep prompt)."""
    if prefix is None:
        prompt = vectors.unsqueeze(0).expand(ids.shape[0], -1, -1) if vectors is not None else None
        hidden = hidden_states(model, ids, mask, prompt)
        return hidden[:, -ids.shape[1]:, :]
    out, _ = run_after_prefix(model, prefix.layers, ids, mask, prompt_rows)
    return out.last_hidden_state


def _cache_argument(model) -> str:
    """The keyword ``generate`` takes a ready cache under: ``cache`` in newer transformers, else ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(decoder_of(model)).forward).parameters else "past_key_values"


@torch.inference_mode()
def score(model, encoder: TaskEncoder, prompts: list[list[int]], vectors: torch.Tensor | None = None,
          prefix: PrefixCache | None = None, batch_size: int = 32, row_hook: RowHook | None = None) -> np.ndarray:
    """Log-likelihood ``[N, C]`` of every candidate answer, computed as ``score_prompts`` computes it.

    ``row_hook(rows)`` is called before each batch with the indices (into ``prompts``) of its rows, e.g. so an
    ECO guard knows which rows of the coming forward pass are flagged; it runs the uncached path, except for a
    deep prompt (``prefix`` without ``vectors``), whose keys/values are the artifact itself: the hook's answer
    says which rows attend to them.
    """
    deep = vectors is None and prefix is not None
    if prefix is None or (row_hook is not None and not deep):
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
        on = row_hook(np.asarray(rows)) if row_hook is not None else None
        prompt_rows = None if on is None else torch.as_tensor(np.asarray(on, dtype=bool), device=device)
        hidden = _run(model, ids, mask, vectors, prefix, prompt_rows)
        out[rows] = torch.log_softmax(lm_logits(model, hidden[:, -1, :]), dim=-1)[:, first_ids].double().cpu().numpy()
        for c, cand in enumerate(encoder.candidate_ids):
            if len(cand) == 1:
                continue
            ids2, mask2 = pad_left([s + cand[:-1] for s in seqs], pad, device)
            hidden2 = _run(model, ids2, mask2, vectors, prefix, prompt_rows)
            k = len(cand)
            logp = torch.log_softmax(lm_logits(model, hidden2[:, -k:, :].reshape(-1, hidden2.shape[-1])), dim=-1).view(len(rows), k, -1)
            target = torch.tensor(cand, device=device).view(1, k, 1).expand(len(rows), k, 1)
            out[rows, c] = logp.gather(2, target).squeeze(2).sum(1).double().cpu().numpy()
    return out


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy when ``temperature`` is 0, else nucleus sampling; ``stop`` strings end a row.

    Rows of one ``generate`` call share one ``Sampling``; a seeded call samples from its own random stream,
    so the same seed, prompt and policy give the same text whatever else the server is doing.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


GREEDY = Sampling()


class RowStreamer:
    """A ``transformers`` streamer that hands each decoding step's token of row ``r`` to ``sinks[r]`` (if any).

    ``generate`` first passes the prompt (skipped here), then one ``[B]`` tensor per step; ``end`` is called
    once, when generation stops, and is forwarded as ``sink(None)``.
    """

    def __init__(self, sinks: list[Callable[[int | None], None] | None]):
        self.sinks = sinks
        self._prompt_seen = False
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        tokens = value.view(-1).tolist()
        for sink, token in zip(self.sinks, tokens):
            if sink is not None:
                sink(int(token))

    def end(self) -> None:
        self.ended = True
        for sink in self.sinks:
            if sink is not None:
                sink(None)


class StopOnText:
    """Stops a row once its decoded continuation contains a stop string (any tokenizer: it compares text).

    ``transformers``' own ``stop_strings`` precomputes token/string overlaps from the vocabulary and fails on
    some tokenizers (e.g. word-level ones); decoding the few generated tokens per step is cheap and exact.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...], start: int):
        self.tokenizer, self.stop, self.start = tokenizer, stop, start

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: list[int], vectors: torch.Tensor | None = None,
             prefix: PrefixCache | None = None, row_hook: RowHook | None = None, sampling: Sampling = GREEDY,
             streamer: RowStreamer | None = None) -> list[list[int]]:
    """Continuations of a left-padded batch through ``model.generate``, each row cut at EOS or its own limit.

    The soft prompt enters as a key/value prefix: its cached keys/values (``prefix``, or computed here once
    for the batch; a deep prompt's ``prefix`` alone, without ``vectors``, is its per-layer keys/values) are handed to ``generate`` as ``past_key_values`` in front of the request tokens, with
    placeholder ids at the prompt positions that ``generate`` never embeds (it only feeds the uncached tail).
    Positions count the prompt, as in training. ``row_hook`` (ECO) is called once with all rows before the
    prefill; its embedding hook leaves the one-token decode steps alone. Stop strings end a row early (``StopOnText``);
    the caller trims the text at the stop string (the returned ids include the tokens that completed it).
    """
    device = next(model.parameters()).device
    on = row_hook(np.arange(len(prompts))) if row_hook is not None else None
    if (vectors is not None or prefix is not None) and on is not None and not np.all(on):
        # a gated soft prompt: the rows it applies to and the others are generated as two groups
        on = np.asarray(on, dtype=bool)
        outputs: list[list[int]] = [[] for _ in prompts]
        for group, vec, pre in ((np.flatnonzero(on), vectors, prefix), (np.flatnonzero(~on), None, None)):
            if len(group):
                sub = RowStreamer([streamer.sinks[i] for i in group]) if streamer is not None else None
                outs = generate(model, tokenizer, [prompts[i] for i in group], [max_new_tokens[i] for i in group], vec, pre,
                                sampling=sampling, streamer=sub)
                for i, out in zip(group, outs):
                    outputs[i] = out
        if streamer is not None:
            streamer.ended = True
        return outputs
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask = pad_left(prompts, pad, device)
    cache = None
    if vectors is not None or prefix is not None:  # a soft prompt's keys/values, or a deep prompt's own
        layers = prefix.layers if prefix is not None else prefix_key_values(model, vectors)
        p = layers[0][0].shape[-2]
        cache = expanded_cache(model, layers, len(prompts))
        ids = torch.cat([ids.new_full((len(prompts), p), pad), ids], dim=1)
        mask = torch.cat([mask.new_ones((len(prompts), p)), mask], dim=1)
    config = GenerationConfig(max_new_tokens=max(max_new_tokens), do_sample=not sampling.greedy, num_beams=1,
                              pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    if not sampling.greedy:
        config.temperature, config.top_p, config.top_k = float(sampling.temperature), float(sampling.top_p), 0
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) if sampling.seed is not None else contextlib.nullcontext()
    with rng:
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        extra = {_cache_argument(model): cache} if cache is not None else {}
        if sampling.stop:
            extra["stopping_criteria"] = StoppingCriteriaList([StopOnText(tokenizer, sampling.stop, ids.shape[1])])
        out = unwrap(model).generate(input_ids=ids, attention_mask=mask, generation_config=config, streamer=streamer, **extra)
    eos = tokenizer.eos_token_id
    outputs = []
    for row, limit in enumerate(max_new_tokens):
        tokens = out[row, ids.shape[1]:].tolist()
        if eos is not None and eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        outputs.append(tokens[:limit])
    return outputs
