"""Last-layer representations at the answer position (the model passes behind the t-SNE picture), with an
optional soft prompt, through the on-disk embedding cache when the model and prompt are named exactly."""

from __future__ import annotations

import numpy as np
import torch

from spul.data.embeddings import CachedEncoder
from spul.io import sha256_text
from spul.models.forward import hidden_states, pad_left


def last_layer_representations(model, encoder, texts: list[str], prompt=None, batch_size: int = 32):
    """Final hidden state at the answer position (the last prompt token) for each text, ``[N, d]`` float32."""
    device = next(model.parameters()).device
    prompts = encoder.encode_prompts(texts)
    out = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            ids, mask = pad_left(chunk, encoder.tokenizer.pad_token_id, device)
            p = prompt(len(chunk)) if prompt is not None else None
            out.append(hidden_states(model, ids, mask, p)[:, -1, :].float().cpu())
    return torch.cat(out).numpy()


def cached_representations(model, encoder, texts: list[str], prompt=None, cache_key: str | None = None) -> np.ndarray:
    """``last_layer_representations`` through the on-disk embedding cache (``spul.data.embeddings``) when
    ``cache_key`` names the model (and prompt) exactly; the key also covers the template and max_length."""
    if cache_key is None:
        return last_layer_representations(model, encoder, texts, prompt)
    layout = sha256_text(repr(encoder.head_ids), repr(encoder.tail_ids), str(encoder.max_length))[:12]
    embed = CachedEncoder(embed_fn=lambda chunk: last_layer_representations(model, encoder, chunk, prompt),
                          identity=f"last-layer:{cache_key}:{layout}", progress=False)
    return embed(texts)
