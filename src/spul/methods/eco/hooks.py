"""The guard: a forward hook on the embedding layer that corrupts flagged rows' prompt embeddings.

The hook is added and removed by its handle (``with guard.attached(model): ...``), so hooks that other code
registered on the same module survive. Before each forward the caller says which rows are flagged
(``set_batch``). Padding is never corrupted: with left padding, a row's real tokens start at its first
non-pad id (or where ``attention_mask`` says, when given). With ``prompt_lengths``, only the first that many
real tokens are corrupted, so answer tokens appended for scoring stay clean.

Prefill only: with ``prefill_only`` (default) a forward whose sequence length is 1 is left alone. During
``generate`` with a KV cache every decode step embeds exactly one new token, so only the prompt (prefill)
is corrupted. A one-token prompt is therefore never corrupted; set ``prefill_only=False`` to corrupt every
forward instead.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from spul.errors import ModelError
from spul.methods.eco.corruptions import Corruption
from spul.models.forward import unwrap


class EmbeddingGuard:
    def __init__(self, corruption: Corruption, pad_token_id: int | None = None, prefill_only: bool = True):
        self.corruption = corruption
        self.pad_token_id = pad_token_id
        self.prefill_only = prefill_only
        self.rows: torch.Tensor | None = None
        self.prompt_lengths: torch.Tensor | None = None
        self.attention_mask: torch.Tensor | None = None
        self.calls = 0  # forwards that were corrupted (for tests and logs)

    def set_batch(self, flags, prompt_lengths=None, attention_mask: torch.Tensor | None = None) -> None:
        """Flag rows ``[B]`` of the next forward(s); ``None`` anywhere means "not known / all real"."""
        self.rows = None if flags is None else torch.as_tensor(np.asarray(flags, dtype=bool))
        self.prompt_lengths = None if prompt_lengths is None else torch.as_tensor(np.asarray(prompt_lengths, dtype=np.int64))
        self.attention_mask = attention_mask

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
        if self.prefill_only and T <= 1:
            return None
        if self.rows.shape[0] != B:
            raise ModelError(f"the ECO guard has flags for {self.rows.shape[0]} rows but the batch has {B}",
                             "call guard.set_batch(flags) with one flag per row before each forward")
        ids = args[0] if args and torch.is_tensor(args[0]) else None
        self.calls += 1
        return self.corruption.apply(output, self.positions(ids, (B, T)).to(output.device))
