"""Deep prompts (PEFT prefix tuning / P-tuning v2): trainable keys and values in front of every layer.

A plain soft prompt lives in the input embeddings; a deep prompt gives every attention layer its own ``p``
key/value pairs, which is what ``models/prefix_cache.py`` already runs for a soft prompt's computed keys and
values. So the same machinery serves both: ``hidden_after_prefix(model, prefix_layers(peft_model), ids, mask)``
(training, with gradient) and ``deep_prefix_applied`` (inference: a pre-hook on the decoder adds the prefix to
any forward that starts without a cache, so evaluation and the audit need no change).

The artifact is a PEFT ``PrefixTuningConfig`` adapter (no projection MLP); it is initialised with the keys and
values that sampled vocabulary embeddings would produce as a plain prompt at positions 0..p-1, so training
starts from a sensible prefix instead of PEFT's N(0, 1) rows.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch

from spul.errors import ModelError
from spul.models.forward import decoder_of, unwrap
from spul.models.prefix_cache import KeyValues, expanded_cache, prefix_key_values
from spul.models.seeding import seeded


def is_prefix_tuning(model) -> bool:
    cfg = getattr(model, "peft_config", None)
    if not isinstance(cfg, dict) or not cfg:
        return False
    active = getattr(model, "active_adapter", None)
    c = cfg.get(active) if active in cfg else next(iter(cfg.values()))
    return str(getattr(c, "peft_type", "")).endswith("PREFIX_TUNING")


def add_prefix_prompt(model, num_virtual_tokens: int, init_vectors: torch.Tensor | None = None, seed: int = 0, base_model_name: str = ""):
    """Wrap ``model`` in a PEFT prefix-tuning model; with ``init_vectors [p, d]`` the prefix starts as their keys/values."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    config = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens, prefix_projection=False,
                                base_model_name_or_path=base_model_name or None)
    init_layers = None
    if init_vectors is not None:
        with torch.no_grad():
            init_layers = prefix_key_values(model, init_vectors.to(model.get_input_embeddings().weight.dtype))
    with seeded(seed):
        peft_model = get_peft_model(model, config)
    encoder = peft_model.prompt_encoder[peft_model.active_adapter]
    encoder.float()
    if init_layers is not None:
        with torch.no_grad():
            encoder.embedding.weight.copy_(flatten_layers(peft_model, init_layers).to(encoder.embedding.weight.dtype))
    return peft_model


def _shape(peft_model) -> tuple[int, int, int, int]:
    cfg = peft_model.peft_config[peft_model.active_adapter]
    heads = cfg.num_attention_heads
    return cfg.num_virtual_tokens, cfg.num_layers, heads, cfg.token_dim // heads


def flatten_layers(peft_model, layers: KeyValues) -> torch.Tensor:
    """Per-layer ``(keys, values)`` ``[1, heads, p, hd]`` → PEFT's prefix table ``[p, layers·2·heads·hd]``."""
    p, n_layers, heads, hd = _shape(peft_model)
    stacked = torch.stack([t[0] for kv in layers for t in kv])  # [L*2, heads, p, hd]
    return stacked.permute(2, 0, 1, 3).reshape(p, n_layers * 2 * heads * hd)


def prefix_layers(peft_model, dtype: torch.dtype | None = None) -> KeyValues:
    """The deep prompt as per-layer ``(keys, values)`` ``[1, heads, p, hd]`` (differentiable), PEFT's layout."""
    p, n_layers, heads, hd = _shape(peft_model)
    table = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
    if dtype is not None:
        table = table.to(dtype)
    kv = table.view(p, n_layers * 2, heads, hd).permute(1, 2, 0, 3).unsqueeze(1)  # [L*2, 1, heads, p, hd]
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(n_layers)]


@contextlib.contextmanager
def deep_prefix_applied(model, layers: KeyValues, rows_on: Callable[[], "np.ndarray | None"] | None = None) -> Iterator[None]:
    """While active, every decoder forward that starts without a cache attends to ``layers`` first.

    The rewrite matches ``prefix_cache.run_after_prefix``: the mask gains ``p`` ones in front, positions count
    the prefix, and the cache starts at ``p``. Forwards that already carry a cache (generation steps) pass.
    ``rows_on`` (gated deep prompts) returns which rows of the next forwards get the prefix (None: all): the
    prefix slots of the other rows are masked like padding, and positions count real tokens only, so those
    rows run as unprompted rows; a batch with no row on runs without the prefix at all.
    """
    decoder = decoder_of(model)
    length = layers[0][0].shape[-2]

    def pre_hook(module, args, kwargs):
        # a forward with a cache (``cache`` in newer transformers, ``past_key_values`` before) continues from it
        if args or kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None:
            return None
        mask = kwargs.get("attention_mask")
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        batch, width = ref.shape[0], ref.shape[1]
        on = rows_on() if rows_on is not None else None
        if on is not None:
            on = np.asarray(on, dtype=bool)
            if on.shape != (batch,):
                raise ModelError(f"the deep prompt has row flags for {on.shape[0]} rows but the batch has {batch}",
                                 "flag the rows of each forward (the intervention's hook) before running it")
            if not on.any():
                return None
            on = None if on.all() else on
        if mask is None:
            mask = torch.ones((batch, width), dtype=torch.long, device=ref.device)
        front = mask.new_ones((batch, length))
        if on is not None:
            front = front * torch.as_tensor(on, device=mask.device).to(mask.dtype).unsqueeze(1)
        full = torch.cat([front, mask], dim=1)
        kwargs["attention_mask"] = full
        kwargs["position_ids"] = (full.long().cumsum(-1) - 1).clamp(min=0)[:, length:].contiguous()
        kwargs["past_key_values"] = expanded_cache(model, layers, batch)
        kwargs["cache_position"] = torch.arange(length, length + width, device=ref.device)
        kwargs["use_cache"] = True
        return args, kwargs

    handle = decoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def frozen_layers(peft_model, model) -> KeyValues:
    """A detached copy of the deep prompt in the frozen model's dtype (for inference)."""
    dtype = unwrap(model).get_input_embeddings().weight.dtype
    with torch.no_grad():
        return [(k.detach().clone(), v.detach().clone()) for k, v in prefix_layers(peft_model, dtype)]
