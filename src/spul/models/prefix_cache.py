"""Serve a soft prompt as a precomputed key/value prefix, so unlearning adds almost nothing per request.

The soft prompt is the same ``p`` vectors in front of every request. Its keys and values at every layer
depend only on those vectors (causal attention: the prompt never sees the text), so they are computed once
and reused: each batch attends to the cached prefix plus its own tokens, and the decoder never re-runs the
``p`` prompt positions. The result equals ``hidden_states(model, ids, mask, prompt)`` up to float rounding.
"""

from __future__ import annotations

import torch

from spul.models.forward import decoder_of, lm_logits, unwrap


class PrefixCache:
    """Keys/values of a soft prompt, computed once, expanded to any batch without copying.

    ``prompt`` is ``[p, d]`` (or ``[1, p, d]``) input embeddings, e.g. ``prompt_vectors(peft_model, 1, dtype)[0]``.
    Rebuild the cache when the prompt or the model changes; it holds no gradient.
    """

    def __init__(self, model, prompt: torch.Tensor):
        self.model = model
        base = unwrap(model)
        embeds = prompt.detach()
        if embeds.dim() == 2:
            embeds = embeds.unsqueeze(0)
        if embeds.dim() != 3 or embeds.shape[0] != 1:
            raise ValueError(f"prompt must be [p, d] or [1, p, d], got {tuple(prompt.shape)}")
        weight = base.get_input_embeddings().weight
        embeds = embeds.to(device=weight.device, dtype=weight.dtype)
        self.length = embeds.shape[1]
        self.config = base.config
        positions = torch.arange(self.length, device=weight.device).unsqueeze(0)
        with torch.no_grad():
            out = decoder_of(model)(inputs_embeds=embeds, position_ids=positions, use_cache=True)
        cache = out.past_key_values
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = [(layer.keys, layer.values) for layer in cache.layers]

    def expanded(self, batch_size: int):
        """A fresh ``DynamicCache`` holding the prefix for ``batch_size`` rows (views, no copy)."""
        from transformers import DynamicCache

        data = [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self.layers]
        return DynamicCache(ddp_cache_data=data, config=self.config)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      prompt_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``[B, T, d]`` of the text tokens (left-padded) after the cached prefix.

        ``prompt_rows [B]`` (bool) keeps the prefix for some rows only; the others see it masked out, which
        makes them exactly unprompted rows (same convention as ``forward.hidden_states``).
        """
        batch = input_ids.shape[0]
        prefix_mask = attention_mask.new_ones((batch, self.length))
        if prompt_rows is not None:
            prefix_mask = prefix_mask * prompt_rows.to(prefix_mask.dtype).unsqueeze(1)
        mask = torch.cat([prefix_mask, attention_mask], dim=1)
        # positions count real tokens, prefix included, exactly as in the uncached path
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, self.length:]
        cache_position = torch.arange(self.length, self.length + input_ids.shape[1], device=input_ids.device)
        with torch.no_grad():
            out = decoder_of(self.model)(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                         past_key_values=self.expanded(batch), cache_position=cache_position, use_cache=True)
        return out.last_hidden_state

    def last_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``[B, V]`` (fp32) at each row's last position."""
        hidden = self.hidden_states(input_ids, attention_mask, prompt_rows)
        return lm_logits(self.model, hidden[:, -1, :].contiguous())
