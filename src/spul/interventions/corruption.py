"""Embedding corruption (ECO's inference-time half): corruption functions, the dimension selection they go
through, and the embedding-layer hook that applies them to flagged rows' prompt tokens.

A corruption is one function ``f(x, sigma, generator) -> x'`` over a ``[B, T, d]`` embedding tensor; adding one
is ``@register_corruption("name")``. ``Corruption`` combines it with a dimension selector (first n, seeded
random n, top-k by magnitude) and a position mask, so only chosen positions and dimensions ever change.

``EmbeddingGuard`` is a forward hook on the embedding layer, added and removed by its handle (``with
guard.attached(model): ...``), so hooks that other code registered on the same module survive. Before each
forward the caller says which rows are flagged (``set_batch``). Padding is never corrupted: with left padding, a
row's real tokens start at its first non-pad id (or where ``attention_mask`` says, when given). With
``prompt_lengths``, only the first that many real tokens are corrupted, so answer tokens appended for scoring
stay clean. Prefill only: with ``prefill_only`` (default) a forward whose sequence length is 1 is left alone once
the batch has had a forward (during ``generate`` with a KV cache every decode step embeds exactly one new token);
the first forward after ``set_batch`` is the prefill and is corrupted even when the prompt is one token long.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from spul.errors import ConfigError, ModelError
from spul.interventions.base import Intervention
from spul.interventions.corruption_config import CORRUPTION_NAMES, CorruptionConfig, DimSelect  # noqa: F401 - re-exported
from spul.models.forward import unwrap



CorruptionFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
CORRUPTIONS: dict[str, CorruptionFn] = {}
# corruptions whose result depends on sigma (only those are worth a σ search)
USES_SIGMA: set[str] = set()
# corruptions that never draw from the generator: a row's corruption does not depend on its batch
DETERMINISTIC: set[str] = set()


def register_corruption(name: str, uses_sigma: bool = False, deterministic: bool = False) -> Callable[[CorruptionFn], CorruptionFn]:
    """Register ``fn`` as corruption ``name``; ``deterministic`` when it never draws from the generator (then
    distributed evaluation may split its batches across processes; otherwise one process scores them in order)."""
    def add(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = fn
        CORRUPTION_NAMES.add(name)
        if uses_sigma:
            USES_SIGMA.add(name)
        if deterministic:
            DETERMINISTIC.add(name)
        else:
            DETERMINISTIC.discard(name)
        return fn

    return add


@register_corruption("noise", uses_sigma=True)
def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """x + N(0, σ²), drawn in fp32 from a seeded generator (the same σ gives the same noise pattern)."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32).to(x.device)
    return (x.float() + sigma * noise).to(x.dtype)


@register_corruption("zero", deterministic=True)
def zero_out(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    return torch.zeros_like(x)


@register_corruption("sign_flip", deterministic=True)
def sign_flip(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    return -x


class Corruption:
    """A registered corruption bound to its parameters; ``apply(x, positions)`` changes only masked entries."""

    def __init__(self, cfg: CorruptionConfig, sigma: float | None = None):
        if cfg.name not in CORRUPTIONS:
            raise ConfigError(f"corruption {cfg.name!r} is unknown", f"use one of: {', '.join(sorted(CORRUPTIONS))}")
        self.cfg = cfg
        self.fn = CORRUPTIONS[cfg.name]
        self.sigma = float(cfg.sigma if sigma is None else sigma)
        self._random_dims: dict[int, torch.Tensor] = {}
        self.generator = torch.Generator(device="cpu")
        self.reset()

    def reset(self) -> None:
        """Restart the noise stream, so repeated evaluations of the same inputs see the same corruption."""
        self.generator.manual_seed(self.cfg.seed)

    def params(self) -> dict:
        return {"name": self.cfg.name, "dims": self.cfg.dims, "select": self.cfg.select.value, "sigma": self.sigma, "seed": self.cfg.seed}

    def dim_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Bool mask broadcastable to ``x`` ([d] for first/random, [B, T, d] for top-k)."""
        d = x.shape[-1]
        n = d if self.cfg.dims == 0 else min(self.cfg.dims, d)
        select = self.cfg.select
        if select is DimSelect.FIRST:
            return torch.arange(d, device=x.device) < n
        if select is DimSelect.RANDOM:
            if d not in self._random_dims:
                g = torch.Generator(device="cpu").manual_seed(self.cfg.seed + 7919)
                mask = torch.zeros(d, dtype=torch.bool)
                mask[torch.randperm(d, generator=g)[:n]] = True
                self._random_dims[d] = mask
            return self._random_dims[d].to(x.device)
        top = x.detach().abs().float().topk(n, dim=-1).indices
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(-1, top, True)

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Corrupt ``x [B, T, d]`` at ``positions [B, T]`` (bool) on the selected dimensions only."""
        mask = positions.to(x.device).unsqueeze(-1) & self.dim_mask(x)
        return torch.where(mask, self.fn(x, self.sigma, self.generator), x)


class EmbeddingGuard:
    def __init__(self, corruption: Corruption, pad_token_id: int | None = None, prefill_only: bool = True):
        self.corruption = corruption
        self.pad_token_id = pad_token_id
        self.prefill_only = prefill_only
        self.rows: torch.Tensor | None = None
        self.prompt_lengths: torch.Tensor | None = None
        self.attention_mask: torch.Tensor | None = None
        self.calls = 0  # forwards that were corrupted (for tests and logs)
        self._forwards = 0  # forwards since the last set_batch (the first one is the prefill)

    def set_batch(self, flags, prompt_lengths=None, attention_mask: torch.Tensor | None = None) -> None:
        """Flag rows ``[B]`` of the next forward(s); ``None`` anywhere means "not known / all real"."""
        self.rows = None if flags is None else torch.as_tensor(np.asarray(flags, dtype=bool))
        self.prompt_lengths = None if prompt_lengths is None else torch.as_tensor(np.asarray(prompt_lengths, dtype=np.int64))
        self.attention_mask = attention_mask
        self._forwards = 0

    def clear(self) -> None:
        self.set_batch(None)

    @contextmanager
    def attached(self, model) -> Iterator["EmbeddingGuard"]:
        """Hook the model's input embeddings for the duration of the block; always removes exactly this hook."""
        self.corruption.reset()
        handle = unwrap(model).get_input_embeddings().register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()
            self.clear()

    def positions(self, input_ids: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        """Bool ``[B, T]``: flagged rows' real prompt positions."""
        B, T = shape
        if self.attention_mask is not None and tuple(self.attention_mask.shape) == (B, T):
            real = self.attention_mask.bool().cpu()
        elif self.pad_token_id is not None and input_ids is not None:
            real = (input_ids.cpu() != self.pad_token_id).long().cumsum(1) > 0
        else:
            real = torch.ones(B, T, dtype=torch.bool)
        if self.prompt_lengths is not None:
            index = real.long().cumsum(1) - 1
            real = real & (index < self.prompt_lengths.view(B, 1))
        return real & self.rows.view(B, 1)

    def _hook(self, module, args, output):
        if self.rows is None or not bool(self.rows.any()):
            return None
        if output.dim() != 3:
            return None
        B, T = output.shape[:2]
        self._forwards += 1
        if self.prefill_only and T <= 1 and self._forwards > 1:  # a decode step after the prefill
            return None
        if self.rows.shape[0] != B:
            raise ModelError(f"the ECO guard has flags for {self.rows.shape[0]} rows but the batch has {B}",
                             "call guard.set_batch(flags) with one flag per row before each forward")
        ids = args[0] if args and torch.is_tensor(args[0]) else None
        self.calls += 1
        return self.corruption.apply(output, self.positions(ids, (B, T)).to(output.device))


class EmbeddingCorruption(Intervention):
    """Corrupt the prompt embeddings of the active rows (all rows unless a gate narrows them).

    ECO is ``Gated(EmbeddingCorruption(guard), classifier)``. The noise stream restarts each time it is applied,
    so a group's result never depends on which groups ran before it.
    """

    kind = "corruption"

    def __init__(self, name: str, guard: EmbeddingGuard, **kwargs):
        super().__init__(name, **kwargs)
        self.embedding_guard = guard
        # a noise stream runs batch after batch: split across processes it would give other noise
        self.batch_invariant = guard.corruption.cfg.name in DETERMINISTIC

    @contextmanager
    def applied(self, model, texts: list[str], prompts: list[list[int]]):
        lengths = np.asarray([len(p) for p in prompts])
        with self.embedding_guard.attached(model):

            def hook(rows, active=None):
                rows = np.asarray(rows)
                flags = np.ones(len(rows), dtype=bool) if active is None else np.asarray(active, dtype=bool)
                self.embedding_guard.set_batch(flags, lengths[rows])
                return None

            yield hook
