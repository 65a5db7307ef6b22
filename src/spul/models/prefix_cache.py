"""A soft prompt as a key/value prefix: computed once, shared by every row (and, when serving, every request).

The soft prompt is the same ``p`` vectors in front of every row. Its keys and values at every layer depend
only on those vectors (causal attention: the prompt never sees the text), so they are computed once, at
batch size 1, and every row attends to that shared prefix plus its own tokens; the decoder never re-runs the
``p`` prompt positions per row. The result equals ``forward.hidden_states(model, ids, mask, prompt)`` up to
float rounding.

Two users: serving (``PrefixCache``: computed once per artifact, no gradient) and SPUL training
(``prefix_key_values`` + ``hidden_after_prefix`` once per step, with gradient: the expanded keys/values sum
every row's gradient back into the single prompt computation).
"""

from __future__ import annotations

import torch

from spul.models.forward import decoder_of, lm_logits, unwrap

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]


def prefix_key_values(model, prompt: torch.Tensor) -> KeyValues:
    """Each layer's ``(keys, values)`` for the prompt ``[1, p, d]`` (or ``[p, d]``) alone, at positions 0..p-1.

    Differentiable when ``prompt`` requires grad and grad mode is on.
    """
    embeds = prompt.unsqueeze(0) if prompt.dim() == 2 else prompt
    if embeds.dim() != 3 or embeds.shape[0] != 1:
        raise ValueError(f"prompt must be [p, d] or [1, p, d], got {tuple(prompt.shape)}")
    weight = unwrap(model).get_input_embeddings().weight
    embeds = embeds.to(device=weight.device, dtype=weight.dtype)
    positions = torch.arange(embeds.shape[1], device=weight.device).unsqueeze(0)
    out = decoder_of(model)(inputs_embeds=embeds, position_ids=positions, use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def expanded_cache(model, layers: KeyValues, batch_size: int):
    """A fresh ``DynamicCache`` holding the prefix for ``batch_size`` rows (views, no copy)."""
    from transformers import DynamicCache

    data = [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in layers]
    return DynamicCache(ddp_cache_data=data, config=unwrap(model).config)


def run_after_prefix(model, layers: KeyValues, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     prompt_rows: torch.Tensor | None = None):
    """The decoder's output for left-padded text tokens that follow the shared prefix ``layers``, and the mask
    over prefix + text (what a caller continuing generation from the returned cache needs).

    ``prompt_rows [B]`` (bool) keeps the prefix for some rows only; the others see it masked out, which
    makes them exactly unprompted rows (same convention as ``forward.hidden_states``).
    """
    batch, length = input_ids.shape[0], layers[0][0].shape[-2]
    prefix_mask = attention_mask.new_ones((batch, length))
    if prompt_rows is not None:
        prefix_mask = prefix_mask * prompt_rows.to(prefix_mask.dtype).unsqueeze(1)
    mask = torch.cat([prefix_mask, attention_mask], dim=1)
    # positions count real tokens, prefix included, exactly as in the unshared path
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, length:].contiguous()
    cache_position = torch.arange(length, length + input_ids.shape[1], device=input_ids.device)
    out = decoder_of(model)(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                            past_key_values=expanded_cache(model, layers, batch), cache_position=cache_position, use_cache=True)
    return out, mask


def hidden_after_prefix(model, layers: KeyValues, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        prompt_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states ``[B, T, d]`` of left-padded text tokens that follow the shared prefix ``layers``."""
    return run_after_prefix(model, layers, input_ids, attention_mask, prompt_rows)[0].last_hidden_state


class PrefixCache:
    """Keys/values of a soft prompt for serving, computed once, expanded to any batch without copying.

    ``prompt`` is ``[p, d]`` (or ``[1, p, d]``) input embeddings, e.g. ``prompt_vectors(peft_model, 1, dtype)[0]``.
    Rebuild the cache when the prompt or the model changes; it holds no gradient.
    """

    def __init__(self, model, prompt: torch.Tensor):
        self.model = model
        with torch.no_grad():
            self.layers = prefix_key_values(model, prompt.detach())
        self.length = self.layers[0][0].shape[-2]

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      prompt_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``[B, T, d]`` of the text tokens (left-padded) after the cached prefix."""
        with torch.no_grad():
            return hidden_after_prefix(self.model, self.layers, input_ids, attention_mask, prompt_rows)

    def last_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``[B, V]`` (fp32) at each row's last position."""
        hidden = self.hidden_states(input_ids, attention_mask, prompt_rows)
        return lm_logits(self.model, hidden[:, -1, :].contiguous())
