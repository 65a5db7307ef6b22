"""Forward passes, answer scoring and soft prompts on the tiny real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spul.data.encoding import TaskEncoder
from spul.data.tasks import Task, TaskConfig
from spul.evaluation.scoring import score_texts
from spul.models.forward import hidden_states, lm_logits, pad_left


def _full_logprob(model, ids: list[int], answer: list[int]) -> float:
    """log P(answer | ids) with an ordinary full forward pass: the reference the fast path must match."""
    seq = torch.tensor([ids + answer])
    logits = model(input_ids=seq).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(logp[len(ids) - 1 + j, tok].item() for j, tok in enumerate(answer))


def test_left_padding_does_not_change_the_last_position(tiny_model):
    model, tok = tiny_model
    enc = TaskEncoder(Task(), tok, 64)
    short, long = enc.encode_prompts(["loved it", "a dull and slow film , badly made"])
    ids, mask = pad_left([short, long], tok.pad_token_id)
    batched = lm_logits(model, hidden_states(model, ids, mask)[:, -1])
    alone = lm_logits(model, hidden_states(model, *pad_left([short], tok.pad_token_id))[:, -1])
    assert torch.allclose(batched[0], alone[0], atol=1e-5)


def test_scores_match_a_plain_forward_pass_for_single_and_multi_token_answers(tiny_model):
    model, tok = tiny_model
    task = Task(TaskConfig(label_words=["negative", "truly great"]))
    enc = TaskEncoder(task, tok, 64)
    texts = ["loved it", "a dull film", "Zorvan Kettleby was superb in The Glass Orchard"]
    scores = score_texts(model, enc, texts, batch_size=2)
    for i, prompt in enumerate(enc.encode_prompts(texts)):
        for c, cand in enumerate(enc.candidate_ids):
            assert scores.loglik[i, c] == pytest.approx(_full_logprob(model, prompt, cand), abs=1e-4)
    assert scores.predictions.shape == (3,)
    assert np.array_equal(scores.is_generic, scores.predictions >= 2)


def test_masked_prompt_rows_are_exactly_unprompted(tiny_model):
    model, tok = tiny_model
    enc = TaskEncoder(Task(), tok, 64)
    prompts = enc.encode_prompts(["loved it", "a dull film"])
    ids, mask = pad_left(prompts, tok.pad_token_id)
    prompt = torch.randn(2, 3, model.config.hidden_size) * 0.05
    rows = torch.tensor([True, False])
    mixed = lm_logits(model, hidden_states(model, ids, mask, prompt, rows)[:, -1])
    plain = lm_logits(model, hidden_states(model, ids, mask)[:, -1])
    prompted = lm_logits(model, hidden_states(model, ids, mask, prompt)[:, -1])
    assert torch.allclose(mixed[1], plain[1], atol=1e-5)
    assert torch.allclose(mixed[0], prompted[0], atol=1e-5)
    assert not torch.allclose(mixed[0], plain[0], atol=1e-3)


def test_soft_prompt_matches_peft_forward_for_a_single_unpadded_input(tiny_model_dir):
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt, count_trainable, prompt_vectors

    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    peft_model = add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, 5, tokenizer=tok, seed=3)
    assert count_trainable(peft_model) == 5 * model.config.hidden_size
    ids = torch.tensor([TaskEncoder(Task(), tok, 64).encode_prompts(["loved it"])[0]])
    ours = lm_logits(peft_model, hidden_states(peft_model, ids, torch.ones_like(ids), prompt_vectors(peft_model, 1, torch.float32))[:, -1])
    theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].float()
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_p_tuning_counts_the_mlp_like_the_paper(tiny_model_dir):
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt, count_trainable

    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    d, h, p = model.config.hidden_size, 128, 30
    peft_model = add_soft_prompt(model, PromptEncoder.P_TUNING, p, tokenizer=tok)
    # embedding p×d + MLP d→h→h→d with biases (the paper's 1.19M at d=4096)
    assert count_trainable(peft_model) == p * d + (d * h + h) + (h * h + h) + (h * d + d)


def test_vocab_init_has_the_scale_of_real_embeddings(tiny_model_dir):
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt, soft_prompt_embedding

    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    table_std = model.get_input_embeddings().weight.std().item()
    peft_model = add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, 8, tokenizer=tok)
    assert soft_prompt_embedding(peft_model).weight.std().item() == pytest.approx(table_std, rel=0.5)
