"""Tiny real models for tests and examples: a word-level tokenizer and a randomly initialised Llama.

Not mocks: they run through exactly the same code paths as a hub model, only small enough to train in
seconds on a CPU.
"""

from __future__ import annotations

import re
from pathlib import Path

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


def build_tokenizer(corpus: list[str]):
    """A word-level fast tokenizer over ``corpus`` (punctuation split off, case kept)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in corpus for w in re.findall(r"\w+|[^\w\s]", text)})
    vocab = {tok: i for i, tok in enumerate(SPECIAL + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def default_corpus() -> list[str]:
    """Every word the generated data sets, the default templates and generic labels use."""
    from spul.data import generated
    from spul.data.tasks import MCQA_TEMPLATE, PAPER_TEMPLATE, DEFAULT_GENERIC_LABELS

    corpus = [PAPER_TEMPLATE, MCQA_TEMPLATE, " ".join(DEFAULT_GENERIC_LABELS), "negative positive A B C D E"]
    for name, make in generated.GENERATORS.items():
        for df in make(seed=0).values():
            for col in df.columns:
                corpus.extend(str(v) for v in df[col].tolist())
    return corpus


def build_tiny_llama(folder: str | Path, corpus: list[str] | None = None, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random 2-layer Llama with a word-level tokenizer to ``folder`` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(corpus or default_corpus())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
