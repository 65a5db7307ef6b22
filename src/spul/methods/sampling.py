"""A length-grouped sampler whose order depends only on (seed, epoch), so resuming mid-epoch replays it.

transformers' ``LengthGroupedSampler`` without a generator draws each epoch's order from the global torch
RNG at the moment the epoch starts. A run resumed in the middle of epoch e starts that epoch from a freshly
seeded RNG instead, gets another order, skips the wrong batches and ends with a different result.
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    def __init__(self, base: LengthGroupedSampler, seed: int):
        self.__dict__.update(base.__dict__)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return super().__iter__()
