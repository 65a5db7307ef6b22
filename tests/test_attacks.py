"""The audit's attacks on a tiny real model: membership inference, re-phrased queries, relearning, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_run_config


def test_auc_and_min_k_scores():
    from spul.evaluation.attacks.membership import TokenStats, _lowest_mean, auc, member_scores

    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert _lowest_mean(np.array([-5.0, -1.0, -0.1, -0.2, -0.3]), 0.4) == -3.0
    s = member_scores(["a b", "c d e"], [TokenStats(np.array([-1.0]), np.array([0.5])), TokenStats(np.array([-2.0, -4.0]), np.array([1.0, -1.0]))])
    assert s["loss"].tolist() == [-1.0, -3.0] and s["min_k_pp"].tolist() == [0.5, -1.0]


def test_every_variant_is_a_valid_task_for_both_task_kinds():
    from spul.data.tasks import TaskConfig, multiple_choice_task_config
    from spul.evaluation.attacks.paraphrase import VARIANTS, variant_task

    for cfg in (TaskConfig(), multiple_choice_task_config()):
        for v in VARIANTS.values():
            assert variant_task(cfg, v).label_words == cfg.label_words
    assert "positive or negative" in variant_task(TaskConfig(), VARIANTS["reordered_labels"]).template


@pytest.fixture(scope="module")
def spul_run(tmp_path_factory, tiny_model_dir):
    from spul.pipeline import prepare, unlearn

    cfg = tiny_run_config(tmp_path_factory.mktemp("audit"), tiny_model_dir, finetune={"enabled": False},
                          unlearn={"num_epochs": 1})
    data = prepare(cfg)
    return cfg, data, unlearn(cfg, data)


def test_audit_cli_writes_json_and_markdown_for_spul(spul_run, capsys):
    from spul.configuration import dump_yaml
    from spul.interfaces.cli import main

    cfg, _, artifact = spul_run
    config_file = cfg.out / "config.yaml"
    config_file.write_text(dump_yaml(cfg))
    rc = main(["audit", "--config", str(config_file), "--artifact", str(artifact), "audit.limit=8", "audit.batch_size=8"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((cfg.out / "audit" / "artifact" / "audit.json").read_text())
    assert set(report["membership_auc"]) == {"loss", "zlib", "min_k", "min_k_pp", "answer_loglik"}
    for v in report["membership_auc"].values():
        assert 0.0 <= v["without_unlearning"] <= 1.0 and 0.0 <= v["with_unlearning"] <= 1.0
    assert set(report["paraphrase_accuracy"]) == {"original", "other_template", "reordered_labels", "ignore_before", "ignore_after"}
    rl = report["relearning"]
    assert rl["weights_changed"] is False and rl["without_prompt"]["steps_to_target"] == 0
    md = (cfg.out / "audit" / "artifact" / "audit.md").read_text()
    assert "Membership inference" in md and "## Limits" in md and "without the soft prompt" in md


def test_soft_prompt_changes_text_likelihoods_only_when_given(spul_run, tiny_model_dir):
    from spul.artifacts import load_soft_prompt
    from spul.evaluation.attacks.membership import token_statistics
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import prompt_vectors

    cfg, data, artifact = spul_run
    model, tok = load_model(ModelConfig(name_or_path=str(json.loads((artifact / "spul.json").read_text())["base_model"]), dtype="float32", device="cpu"))
    peft_model, _ = load_soft_prompt(model, artifact)
    texts = data["train_forget"]["text"].tolist()[:4]
    plain = token_statistics(peft_model, tok, texts)
    base = token_statistics(model, tok, texts)
    prompted = token_statistics(peft_model, tok, texts, lambda n, rows: (prompt_vectors(peft_model, n, model.dtype), None))
    assert all(np.allclose(a.logprob, b.logprob, atol=1e-5) for a, b in zip(plain, base))
    assert not all(np.allclose(a.logprob, b.logprob, atol=1e-5) for a, b in zip(plain, prompted))


def test_relearning_a_baseline_counts_steps(spul_run, tmp_path):
    pytest.importorskip("spul.methods.baselines")
    from spul.data.tasks import Task
    from spul.evaluation.attacks import AuditConfig, run_audit
    from spul.methods.baselines import BaselineConfig, train_baseline
    from spul.pipeline import base_model_path

    cfg, data, _ = spul_run
    bcfg = BaselineConfig(method="ga_gd", learning_rate=1e-2, num_epochs=1, batch_size=8, progress_bar=False, lora_r=4)
    artifact = train_baseline(cfg.model, Task(cfg.task), data, bcfg, tmp_path / "ga_gd", base=base_model_path(cfg))
    report = run_audit(cfg, artifact, AuditConfig(limit=8, batch_size=8, relearn_max_steps=3, relearn_learning_rate=1e-2,
                                                 variants=["original"]), data=data, out_dir=tmp_path / "audit")
    ft = report["relearning"]["fine_tuning"]
    assert report["relearning"]["weights_changed"] is True
    assert 1 <= len(ft["accuracy_curve"]) <= 4 and (ft["steps_to_target"] is None or 0 <= ft["steps_to_target"] <= 3)
    assert (tmp_path / "audit" / "audit.md").is_file()
