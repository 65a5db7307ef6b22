"""SPUL's two training shortcuts compute the same loss and gradient as the plain path.

``shared_prompt_kv``: the soft prompt runs once per step and every row attends to its keys/values.
``reference_cache``: a retain row's unprompted answer hidden states are computed on its first visit only.
"""

from __future__ import annotations

import pytest
import torch

from spul.methods.losses import IGNORE
from spul.methods.spul import SpulConfig, SpulTrainer
from spul.methods.training import AnswerCollator
from spul.models.loading import ModelConfig, load_model
from spul.models.soft_prompt import PromptEncoder, add_soft_prompt


def _rows(vocab: int, seed: int = 0):
    """Rows of different lengths, forget and retain, one- and two-token answers."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i, (n, k, forget) in enumerate([(5, 1, True), (9, 2, False), (3, 1, False), (7, 2, True), (6, 1, False), (4, 2, False)]):
        prompt = torch.randint(5, vocab, (n,), generator=gen).tolist()
        target = torch.randint(5, vocab, (k,), generator=gen).tolist()
        rows.append({"input_ids": prompt + target[:-1], "prompt_len": n, "target_ids": target, "label": i % 2,
                     "is_forget": forget, "index": i, "row_id": i})
    return rows


def _trainer(model_dir, tmp_path, encoder: PromptEncoder, **flags):
    model, _ = load_model(ModelConfig(name_or_path=str(model_dir), dtype="float32", device="cpu"))
    peft_model = add_soft_prompt(model, encoder, 4, seed=1, encoder_hidden_size=16)
    cfg = SpulConfig(prompt_length=4, prompt_encoder=encoder, batch_size=6, progress_bar=False, alpha=2.0, beta=1.0, **flags)
    trainer = SpulTrainer(model=peft_model, args=cfg.training_arguments(str(tmp_path / "out"), "cpu"), train_dataset=None)
    return trainer, peft_model


def _loss_and_grad(trainer, peft_model, batch):
    peft_model.train()
    loss = trainer.compute_loss(peft_model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]
    peft_model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("encoder", [PromptEncoder.PROMPT_TUNING, PromptEncoder.P_TUNING])
def test_shared_prompt_kv_gives_the_per_row_loss_and_gradient(tiny_model_dir, tmp_path, encoder):
    vocab = 256
    batch = AnswerCollator(0)(_rows(vocab))
    plain, plain_model = _trainer(tiny_model_dir, tmp_path, encoder, shared_prompt_kv=False, reference_cache=False)
    shared, shared_model = _trainer(tiny_model_dir, tmp_path, encoder, shared_prompt_kv=True, reference_cache=False)
    loss_plain, grads_plain = _loss_and_grad(plain, plain_model, batch)
    loss_shared, grads_shared = _loss_and_grad(shared, shared_model, batch)
    torch.testing.assert_close(loss_shared, loss_plain, atol=1e-5, rtol=1e-5)
    assert all(g.abs().sum() > 0 for g in grads_plain)
    for a, b in zip(grads_shared, grads_plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_reference_cache_runs_each_row_once_and_changes_nothing(tiny_model_dir, tmp_path):
    rows = _rows(256)
    cached, cached_model = _trainer(tiny_model_dir, tmp_path, PromptEncoder.PROMPT_TUNING, reference_cache=True)
    plain, plain_model = _trainer(tiny_model_dir, tmp_path, PromptEncoder.PROMPT_TUNING, reference_cache=False)
    collate = AnswerCollator(0)
    # two epochs in different batchings: the cache must key rows, not batch positions
    batches = [collate(rows[:3]), collate(rows[3:]), collate(rows[::-1][:4]), collate(rows[::-1][4:])]
    seen = []
    original = cached.reference_answer_hidden

    def counting(inputs, rows_mask, compute, cache):
        def counted(ids, mask):
            seen.append(ids.shape[0])
            return compute(ids, mask)
        return original(inputs, rows_mask, counted, cache)

    cached.reference_answer_hidden = counting
    for batch in batches:
        a, ga = _loss_and_grad(cached, cached_model, batch)
        b, gb = _loss_and_grad(plain, plain_model, batch)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ga[0], gb[0], atol=1e-5, rtol=1e-4)
    retain = sum(not r["is_forget"] for r in rows)
    assert sum(seen) == retain, "each retain row goes through the reference exactly once"
    # multi-token answers keep one hidden state per answer token
    assert {k: v.shape[0] for k, v in cached._reference_hidden.items()} == {
        r["row_id"]: len(r["target_ids"]) for r in rows if not r["is_forget"]}


def test_rows_without_ids_bypass_the_reference_cache(tiny_model_dir, tmp_path):
    trainer, peft_model = _trainer(tiny_model_dir, tmp_path, PromptEncoder.PROMPT_TUNING, reference_cache=True)
    batch = AnswerCollator(0)([{k: v for k, v in r.items() if k != "row_id"} for r in _rows(256)])
    assert (batch["row_id"] == -1).all()
    _loss_and_grad(trainer, peft_model, batch)
    assert trainer._reference_hidden == {}


def test_collator_marks_labels_and_row_ids():
    batch = AnswerCollator(0)(_rows(256)[:3])
    assert batch["row_id"].tolist() == [0, 1, 2]
    assert (batch["labels"][:, 0] == IGNORE).tolist() == [True, False, True]


def test_gradient_checkpointing_falls_back_to_the_per_row_prompt(tiny_model_dir, tmp_path):
    plain, plain_model = _trainer(tiny_model_dir, tmp_path, PromptEncoder.PROMPT_TUNING, shared_prompt_kv=False)
    ckpt, ckpt_model = _trainer(tiny_model_dir, tmp_path, PromptEncoder.PROMPT_TUNING, shared_prompt_kv=True)
    ckpt_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert not ckpt._share_prompt(ckpt_model)
    batch = AnswerCollator(0)(_rows(256))
    a, ga = _loss_and_grad(ckpt, ckpt_model, batch)
    b, gb = _loss_and_grad(plain, plain_model, batch)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ga[0], gb[0], atol=1e-5, rtol=1e-4)
