"""Corruption functions for prompt embeddings, and the dimension selection they are applied through.

A corruption is one function ``f(x, sigma, generator) -> x'`` over a ``[B, T, d]`` embedding tensor; adding one
is ``@register_corruption("name")``. ``Corruption`` combines it with a dimension selector (first n, seeded
random n, top-k by magnitude) and a position mask, so only chosen positions and dimensions ever change.
"""

from __future__ import annotations

from typing import Callable

import torch

from spul.errors import ConfigError
from spul.methods.eco.config import CorruptionConfig, DimSelect

CorruptionFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
CORRUPTIONS: dict[str, CorruptionFn] = {}
# corruptions whose result depends on sigma (only those are worth a σ search)
USES_SIGMA: set[str] = set()


def register_corruption(name: str, uses_sigma: bool = False) -> Callable[[CorruptionFn], CorruptionFn]:
    def add(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = fn
        if uses_sigma:
            USES_SIGMA.add(name)
        return fn

    return add


@register_corruption("noise", uses_sigma=True)
def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """x + N(0, σ²), drawn in fp32 from a seeded generator (the same σ gives the same noise pattern)."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32).to(x.device)
    return (x.float() + sigma * noise).to(x.dtype)


@register_corruption("zero")
def zero_out(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    return torch.zeros_like(x)


@register_corruption("sign_flip")
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
