"""Baseline losses against hand computation, and each baseline trained end to end on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import tiny_run_config


def test_ascent_term_is_negative_forget_mean_and_clamped():
    from spul.methods.losses import ascent_term

    nll = torch.tensor([1.0, 3.0, 20.0, 5.0], requires_grad=True)
    forget = torch.tensor([True, True, True, False])
    assert ascent_term(nll, forget).item() == pytest.approx(-(1 + 3 + 20) / 3)
    capped = ascent_term(nll, forget, nll_cap=10.0)
    assert capped.item() == pytest.approx(-(1 + 3 + 10) / 3)
    capped.backward()
    # gradient of −mean pushes forget NLLs up; the row past the cap and the retain row get none
    assert nll.grad.tolist() == pytest.approx([-1 / 3, -1 / 3, 0.0, 0.0])


def test_baseline_losses_match_hand_computation():
    from spul.methods.losses import baseline_loss

    nll = torch.tensor([2.0, 4.0, 1.0, 3.0])
    forget = torch.tensor([True, True, False, False])
    kl = torch.tensor([9.0, 9.0, 0.5, 1.5])  # forget-row KLs must be masked out
    ga = baseline_loss("ga", nll, forget)
    assert ga.total.item() == pytest.approx(-3.0) and ga.forget.item() == pytest.approx(-3.0)
    rl = baseline_loss("rl", nll, forget)
    assert rl.total.item() == pytest.approx(3.0)  # descent toward the generic targets
    gd = baseline_loss("ga_gd", nll, forget, retain_weight=0.5)
    assert gd.total.item() == pytest.approx(-3.0 + 0.5 * 2.0)
    gkl = baseline_loss("ga_kl", nll, forget, kl, kl_weight=2.0)
    assert gkl.kl.item() == pytest.approx(1.0) and gkl.total.item() == pytest.approx(-3.0 + 2.0)
    # a batch without forget rows: the ascent term is exactly 0, not NaN
    none = baseline_loss("ga_gd", nll, torch.zeros(4, dtype=torch.bool))
    assert none.forget.item() == 0.0 and math.isfinite(none.total.item())
    with pytest.raises(ValueError):
        baseline_loss("nope", nll, forget)


def test_kl_reference_is_zero_before_training():
    from spul.methods.losses import kl_base_to_prompted

    logits = torch.randn(3, 11)
    assert kl_base_to_prompted(logits, logits).abs().max().item() < 1e-6
    assert (kl_base_to_prompted(torch.randn(3, 11), logits) >= 0).all()


def test_config_validation():
    from spul.errors import ConfigError
    from spul.methods.baselines import BaselineConfig, BaselineMethod

    assert BaselineConfig(method="ga_kl").method is BaselineMethod.GA_KL
    for bad in ({"method": "xx"}, {"kl_weight": -1}, {"nll_cap": 0}, {"lora_r": 0}):
        with pytest.raises((ConfigError, ValueError)):
            BaselineConfig(**bad)


@pytest.mark.parametrize("method,tuning", [("ga", "lora"), ("rl", "lora"), ("ga_kl", "lora"), ("ga_gd", "lora"), ("ga_kl", "full")])
def test_each_baseline_trains_and_reloads(tmp_path, tiny_model_dir, method, tuning):
    from spul.data.tasks import Task
    from spul.evaluation.evaluate import EvalConfig, evaluate_model
    from spul.data.encoding import TaskEncoder
    from spul.methods.baselines import BaselineConfig, load_baseline, train_baseline
    from spul.pipeline import prepare

    run = tiny_run_config(tmp_path, tiny_model_dir)
    data = prepare(run)
    cfg = BaselineConfig(method=method, tuning=tuning, learning_rate=1e-3, batch_size=8, lora_r=4, progress_bar=False, logging_steps=1)
    folder = train_baseline(run.model, Task(run.task), data, cfg, tmp_path / method)
    meta = json.loads((folder / "spul.json").read_text())
    assert meta["method"] == method and meta["training"]["steps"] >= 2
    assert list(folder.glob("*.safetensors"))
    if tuning == "lora":
        assert (folder / "adapter_config.json").is_file()
        assert 0 < meta["trainable_parameters"] < 10_000
    else:
        assert meta["trainable_parameters"] > 50_000
    model, tokenizer, _ = load_baseline(run.model, folder)
    result = evaluate_model(model, TaskEncoder(Task(run.task), tokenizer, 64), data, EvalConfig(progress=False), name=method, identity=method)
    assert 0.0 <= result.metrics["test_forget"].accuracy <= 1.0


def test_gradient_ascent_raises_forget_nll(tmp_path, tiny_model_dir):
    """GA must move the forget NLL up (the sign is right), and the LoRA base weights stay untouched."""
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task
    from spul.methods.baselines import BaselineConfig, load_baseline, train_baseline
    from spul.methods.baselines.trainer import baseline_examples
    from spul.methods.training import AnswerCollator
    from spul.models.loading import load_model
    from spul.methods.losses import answer_positions, per_row_mean, token_nll
    from spul.models.forward import hidden_states, lm_logits
    from spul.pipeline import prepare

    run = tiny_run_config(tmp_path, tiny_model_dir)
    data = prepare(run)
    cfg = BaselineConfig(method="ga", learning_rate=5e-3, num_epochs=2, batch_size=8, lora_r=4, progress_bar=False, warmup_ratio=0.0)

    def forget_nll(model, tokenizer) -> float:
        examples = baseline_examples(data, TaskEncoder(Task(run.task), tokenizer, 64), cfg)
        batch = AnswerCollator(tokenizer.pad_token_id)([{"input_ids": e.prompt_ids + e.target_ids[:-1], "target_ids": e.target_ids,
                                                          "label": e.label, "is_forget": e.is_forget} for e in examples])
        with torch.no_grad():
            h, t, rows = answer_positions(hidden_states(model, batch["input_ids"], batch["attention_mask"]), batch["labels"])
            return per_row_mean(token_nll(lm_logits(model, h), t), rows, len(examples)).mean().item()

    base, tok = load_model(run.model)
    before = forget_nll(base, tok)
    folder = train_baseline(run.model, Task(run.task), data, cfg, tmp_path / "ga")
    model, tok, _ = load_baseline(run.model, folder)
    assert forget_nll(model, tok) > before + 0.05
