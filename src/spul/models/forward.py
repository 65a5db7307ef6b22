"""Forward passes that stop at the hidden states, so logits are computed only where an answer is scored.

A full ``model(...)`` call projects every position onto the vocabulary (49k-256k columns); unlearning and
evaluation only need the few positions that predict answer tokens. Running the decoder trunk and applying
the LM head to a 2-D slice of hidden states saves most of that work and memory.
"""

from __future__ import annotations

import torch


def unwrap(model):
    """The underlying transformers model of a PEFT wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(model):
    base = unwrap(model)
    if hasattr(base, "get_decoder") and base.get_decoder() is not None:
        return base.get_decoder()
    return getattr(base, base.base_model_prefix)


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits (fp32) for a ``[N, d]`` slice of final hidden states."""
    base = unwrap(model)
    logits = base.get_output_embeddings()(hidden).float()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt: torch.Tensor | None = None,
                  prompt_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states ``[B, p + T, d]`` for left-padded inputs, with an optional soft prompt in front.

    Position ids count real tokens only (prompt included), so a left-padded row gets the same positions as
    it would alone; padding is masked out. ``prompt_rows [B]`` (bool) applies the prompt to some rows only:
    for the others the prompt slots are masked like padding, which makes them exactly unprompted rows.
    """
    base = unwrap(model)
    embeds = base.get_input_embeddings()(input_ids)
    if prompt is not None:
        embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
        prefix_mask = attention_mask.new_ones(prompt.shape[:2])
        if prompt_rows is not None:
            prefix_mask = prefix_mask * prompt_rows.to(prefix_mask.dtype).unsqueeze(1)
        attention_mask = torch.cat([prefix_mask, attention_mask], dim=1)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = decoder_of(model)(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def pad_left(sequences: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad to ``[B, T]`` ids and mask: the last position of every row is its last real token."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)
