"""Greedy and sampled generation with a token limit, optionally behind a soft prompt.

Thin over ``transformers``' ``generate``: rows are bucketed by length, left-padded, and generated in batches;
each row's new tokens come back without padding and cut at the first end-of-sequence token. A soft prompt
(``[p, d]`` or ``[1, p, d]`` input embeddings, e.g. ``prompt_vectors(peft_model, 1, dtype)[0]``) is placed in
front of every row as ``inputs_embeds``, the same placement as ``forward.hidden_states``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spul.errors import ConfigError
from spul.models.forward import pad_left, unwrap
from spul.models.seeding import seeded


@dataclass
class DecodingConfig:
    """How answers are generated: greedy by default; ``do_sample`` draws with temperature / top-p / top-k."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation max_new_tokens={self.max_new_tokens} must be at least 1", "use e.g. 32")
        if self.batch_size < 1:
            raise ConfigError(f"generation batch_size={self.batch_size} must be at least 1", "use e.g. 16")
        if self.temperature <= 0:
            raise ConfigError(f"generation temperature={self.temperature} must be positive", "use do_sample=false for greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generation top_p={self.top_p} must be in (0, 1]", "use 1.0 to keep the whole distribution")
        if self.top_k < 0:
            raise ConfigError(f"generation top_k={self.top_k} must be 0 (off) or positive", "use 0")

    def hf_config(self, pad_id: int, eos_id: int | None):
        from transformers import GenerationConfig

        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "pad_token_id": pad_id, "eos_token_id": eos_id}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return GenerationConfig(**kwargs)


def _strip(row: list[int], eos_id: int | None, pad_id: int) -> list[int]:
    if eos_id is not None and eos_id in row:
        row = row[: row.index(eos_id)]
    while row and row[-1] == pad_id and pad_id != eos_id:
        row = row[:-1]
    return row


@torch.inference_mode()
def generate_ids(model, prompts: list[list[int]], *, pad_id: int, eos_id: int | None, decoding: DecodingConfig | None = None,
                 soft_prompt: torch.Tensor | None = None, row_hook=None) -> list[list[int]]:
    """The new token ids (at most ``max_new_tokens``, EOS and padding removed) after each prompt, in input order.

    ``row_hook(rows)`` (optional) is called before each batch with the indices (into ``prompts``) of its rows, e.g.
    so an intervention's embedding hook knows which rows the coming prefill holds (``spul.interventions``).

    With sampling, the draw is seeded by ``decoding.seed`` and the batch number, so a run is repeatable for the
    same inputs and batch size and leaves the caller's random state untouched.
    """
    decoding = decoding or DecodingConfig()
    if any(not p for p in prompts):
        raise ConfigError("an empty prompt cannot be continued", "give every row at least one prompt token")
    base = unwrap(model)
    device = next(base.parameters()).device
    gen_config = decoding.hf_config(pad_id, eos_id)
    if soft_prompt is not None:
        soft_prompt = soft_prompt.unsqueeze(0) if soft_prompt.dim() == 2 else soft_prompt
        if soft_prompt.dim() != 3 or soft_prompt.shape[0] != 1:
            raise ValueError(f"soft_prompt must be [p, d] or [1, p, d], got {tuple(soft_prompt.shape)}")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for b, start in enumerate(range(0, len(order), decoding.batch_size)):
        rows = order[start : start + decoding.batch_size]
        ids, mask = pad_left([prompts[i] for i in rows], pad_id, device)
        if row_hook is not None:
            row_hook(rows)
        with seeded(decoding.seed * 1_000_003 + b):
            if soft_prompt is None:
                new = base.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config)[:, ids.shape[1]:]
            else:
                embeds = base.get_input_embeddings()(ids)
                prefix = soft_prompt.to(device=device, dtype=embeds.dtype).expand(len(rows), -1, -1)
                embeds = torch.cat([prefix, embeds], dim=1)
                mask = torch.cat([mask.new_ones(prefix.shape[:2]), mask], dim=1)
                # with inputs_embeds only, a decoder-only model returns just the new tokens
                new = base.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen_config)
        for j, i in enumerate(rows):
            out[i] = _strip(new[j].tolist(), eos_id, pad_id)
    return out


def generate_texts(model, tokenizer, prompts: list[list[int]], decoding: DecodingConfig | None = None,
                   soft_prompt: torch.Tensor | None = None) -> tuple[list[str], list[list[int]]]:
    """Decoded generations (special tokens dropped) and their token ids."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = generate_ids(model, prompts, pad_id=pad, eos_id=tokenizer.eos_token_id, decoding=decoding, soft_prompt=soft_prompt)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids], ids
