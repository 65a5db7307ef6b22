"""The fast paths give the same numbers as the plain ones: prefix-cached serving, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from spul.models.forward import hidden_states, lm_logits, pad_left
from spul.models.prefix_cache import PrefixCache


def _batch(vocab: int, lengths=(4, 9, 2, 7), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(5, vocab, (n,), generator=gen).tolist() for n in lengths]
    return pad_left(seqs, 0)


def _uncached_last_logits(model, ids, mask, prompt, rows=None):
    h = hidden_states(model, ids, mask, prompt.expand(ids.shape[0], -1, -1), rows)
    return lm_logits(model, h[:, -1, :])


@pytest.mark.parametrize("with_rows", [False, True])
def test_prefix_cache_matches_uncached_prompt_tiny(tiny_model, with_rows):
    model, _ = tiny_model
    d = model.config.hidden_size
    prompt = torch.randn(6, d, generator=torch.Generator().manual_seed(1)) * 0.05
    ids, mask = _batch(model.config.vocab_size)
    rows = torch.tensor([True, False, True, False]) if with_rows else None
    cache = PrefixCache(model, prompt)
    with torch.no_grad():
        expected = _uncached_last_logits(model, ids, mask, prompt, rows)
    got = cache.last_logits(ids, mask, rows)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the same cache serves a second, differently sized batch
    ids2, mask2 = _batch(model.config.vocab_size, lengths=(3, 11), seed=2)
    with torch.no_grad():
        expected2 = _uncached_last_logits(model, ids2, mask2, prompt)
    torch.testing.assert_close(cache.last_logits(ids2, mask2), expected2, atol=1e-5, rtol=1e-5)
    if with_rows:  # masked-out rows are exactly the unprompted model
        with torch.no_grad():
            plain = lm_logits(model, hidden_states(model, ids, mask)[:, -1, :])
        torch.testing.assert_close(got[~rows], plain[~rows], atol=1e-5, rtol=1e-5)


def test_prefix_cache_matches_uncached_prompt_smollm2(packaged_model):
    model, tokenizer = packaged_model
    texts = ["The film was a delight from start to finish.", "Dull.", "I would not watch this again, the plot made no sense at all."]
    ids, mask = pad_left([tokenizer(t).input_ids for t in texts], tokenizer.pad_token_id)
    table = model.get_input_embeddings().weight
    prompt = table[torch.arange(100, 110)].detach().clone()
    cache = PrefixCache(model, prompt)
    with torch.no_grad():
        expected = _uncached_last_logits(model, ids, mask, prompt)
    got = cache.last_logits(ids, mask)
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def _prompt_grad(model_dir, checkpointing: bool):
    """Gradient of an answer loss w.r.t. a prompt-tuning soft prompt, trunk frozen and in eval mode."""
    from spul.models.checkpointing import rearm_checkpointing
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt, prompt_vectors

    model, _ = load_model(ModelConfig(name_or_path=str(model_dir), dtype="float32", device="cpu"))
    peft_model = add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, 5, seed=3)
    calls = []
    if checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for layer in model.model.layers:
            inner = layer._gradient_checkpointing_func

            def counted(*args, _inner=inner, **kwargs):
                calls.append(1)
                return _inner(*args, **kwargs)

            layer._gradient_checkpointing_func = counted
    peft_model.train()
    model.eval()  # what AnswerTrainer does every step
    rearm_checkpointing(model)
    ids, mask = _batch(model.config.vocab_size)
    prompt = prompt_vectors(peft_model, ids.shape[0], torch.float32)
    logits = lm_logits(peft_model, hidden_states(peft_model, ids, mask, prompt)[:, -1, :])
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([5, 6, 7, 8]))
    loss.backward()
    weight = next(p for p in peft_model.parameters() if p.requires_grad)
    frozen_grads = [p.grad for p in model.parameters() if p.grad is not None]
    return weight.grad.clone(), len(calls), frozen_grads


def test_gradient_checkpointing_keeps_prompt_gradient(tiny_model_dir):
    plain, calls_plain, frozen_plain = _prompt_grad(tiny_model_dir, checkpointing=False)
    ckpt, calls_ckpt, frozen_ckpt = _prompt_grad(tiny_model_dir, checkpointing=True)
    assert calls_plain == 0 and calls_ckpt == 2, "checkpointing must really run on the eval-mode trunk"
    assert plain.abs().sum() > 0
    torch.testing.assert_close(ckpt, plain, atol=1e-6, rtol=1e-5)
    assert frozen_plain == [] and frozen_ckpt == [], "the frozen model must get no weight gradients"


def test_frozen_model_has_no_trainable_weights(tiny_model):
    model, _ = tiny_model
    assert not any(p.requires_grad for p in model.parameters())
