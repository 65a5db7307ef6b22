"""Seeded parameter initialisation that leaves the caller's random state alone.

PEFT draws LoRA matrices and P-tuning MLP weights from torch's global generator when the adapter is
created, which happens before the Trainer seeds anything; without this, two runs of the same config start
from different adapters and (at the quickstart's learning rates) end in visibly different places.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU (and CUDA) generators seeded, then restore their previous state."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
