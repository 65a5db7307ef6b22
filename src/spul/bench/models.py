"""Models to benchmark: anything ``load_model`` accepts, or ``random:<arch>`` built from a config.

Random models have the exact shapes of the named architecture, so GPU timings need no downloaded weights
(speed does not depend on the values). ``random:tiny`` is for CPU smoke runs.
"""

from __future__ import annotations

import contextlib

import torch

from spul.errors import ConfigError

# name -> LlamaConfig fields
RANDOM_ARCHS: dict[str, dict] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=1000, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def random_model(arch: str, device: torch.device, dtype: torch.dtype, attn_implementation: str | None = None):
    """A randomly initialised Llama of a named size, built directly on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if arch not in RANDOM_ARCHS:
        raise ConfigError(f"unknown random architecture {arch!r}", f"use one of: {', '.join('random:' + a for a in RANDOM_ARCHS)}")
    config = LlamaConfig(**RANDOM_ARCHS[arch], max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if attn_implementation:
        config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    with _default_dtype(dtype), torch.device(device):
        model = LlamaForCausalLM(config)
    model.eval()
    model.requires_grad_(False)
    model._spul_source = f"random:{arch}"
    return model


def bench_model(name: str, device: torch.device, dtype: torch.dtype, attn_implementation: str | None = None):
    """``(model, tokenizer or None)`` for a ``random:`` name, a hub id, a folder or a packaged model."""
    if name.startswith("random:"):
        return random_model(name.split(":", 1)[1], device, dtype, attn_implementation), None
    from spul.models.loading import ModelConfig, load_model

    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    return load_model(ModelConfig(name_or_path=name, dtype=dtype_name, device=str(device), attn_implementation=attn_implementation))


def non_embedding_params(model) -> int:
    """N in the 4·N·T FLOP estimate: all weights except the token embedding (and an untied LM head)."""
    from spul.models.forward import unwrap

    base = unwrap(model)
    skip = {id(base.get_input_embeddings().weight)}
    out = base.get_output_embeddings()
    if out is not None:
        skip.add(id(out.weight))
    seen: set[int] = set()
    total = 0
    for p in base.parameters():
        if id(p) in skip or id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
    return total
