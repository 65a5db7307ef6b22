"""lm-evaluation-harness with a SPUL artifact: the exported spul task reproduces spul's scores row for row.

Runs offline on the tiny model: the exported task reads local JSONL files (HF_DATASETS_OFFLINE=1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, artifacts):
    from spul.interfaces.cli import main

    out = tmp_path_factory.mktemp("lm_eval_tasks")
    assert main(["lm-eval", str(artifacts["a"]), "--export-task", str(out), "--name", "tiny"]) == 0
    return out


def _spul_scores(tiny_model_dir, artifact, texts):
    """spul's own candidate log-likelihoods for ``texts`` (as ``spul evaluate`` computes them)."""
    from spul.artifacts import load_soft_prompt
    from spul.configuration import from_dict
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, TaskConfig
    from spul.evaluation.scoring import score_texts
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import prompt_vectors

    meta = json.loads((artifact / "spul.json").read_text())
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    encoder = TaskEncoder(Task(from_dict(TaskConfig, meta["task"])), tok, meta["max_length"])
    peft_model, _ = load_soft_prompt(model, artifact)
    provider = lambda n, rows: (prompt_vectors(peft_model, n, torch.float32), None)
    return score_texts(peft_model, encoder, texts, prompt_provider=provider).loglik


def test_exported_task_files(exported, artifacts):
    import yaml

    names = sorted(p.name for p in exported.glob("*.yaml"))
    assert names == [f"spul_tiny_{s}.yaml" for s in ("test_forget", "test_retain", "train_forget", "train_retain")]
    config = yaml.safe_load((exported / "spul_tiny_test_forget.yaml").read_text())
    meta = json.loads((artifacts["a"] / "spul.json").read_text())
    assert config["doc_to_choice"] == meta["task"]["label_words"] + meta["task"]["generic_labels"]
    assert config["doc_to_text"] == "### Text: {{text}}\n\n### Question: What is the sentiment of the given text?\n\n### Sentiment:"
    assert config["target_delimiter"] == " " and config["tag"] == ["spul_tiny"]
    rows = [json.loads(line) for line in Path(config["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    data = (artifacts["a"].parent / "data" / "test_forget.csv").read_text().splitlines()
    assert len(rows) == len(data) - 1 and {r["label"] for r in rows} <= {0, 1}


def test_lm_eval_reproduces_spul_row_for_row(exported, artifacts, tiny_model_dir):
    from spul.evaluation.harness import run_harness

    tasks = ["spul_tiny_test_forget", "spul_tiny_test_retain"]
    results = run_harness(artifacts["a"], tasks, include_path=str(exported), dtype="float32", device="cpu", log_samples=True)
    for task in tasks:
        samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        texts = [s["doc"]["text"] for s in samples]
        harness = np.array([[r[0] for r in s["filtered_resps"]] for s in samples])
        ours = _spul_scores(tiny_model_dir, artifacts["a"], texts)
        np.testing.assert_allclose(harness, ours, atol=1e-4)
        acc = float(np.mean(ours.argmax(1) == np.array([s["doc"]["label"] for s in samples])))
        assert results["results"][task]["acc,none"] == pytest.approx(acc)


def test_plain_lm_eval_recipe_with_peft(exported, artifacts, tiny_model_dir):
    """The documented one-liner: lm-eval's own hf model with ``peft=ARTIFACT`` gives the same scores."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(model="hf", model_args=f"pretrained={tiny_model_dir},peft={artifacts['a']},dtype=float32",
                              tasks=["spul_tiny_test_forget"], task_manager=TaskManager(include_path=str(exported), include_defaults=False),
                              device="cpu", batch_size=4, log_samples=True, bootstrap_iters=0)
    samples = sorted(results["samples"]["spul_tiny_test_forget"], key=lambda s: s["doc_id"])
    harness = np.array([[r[0] for r in s["filtered_resps"]] for s in samples])
    np.testing.assert_allclose(harness, _spul_scores(tiny_model_dir, artifacts["a"], [s["doc"]["text"] for s in samples]), atol=1e-4)


def test_cli_table_with_base_and_refusals(exported, artifacts, tmp_path, capsys):
    from spul.artifacts import save_artifact
    from spul.interfaces.cli import main

    out = tmp_path / "r.json"
    assert main(["lm-eval", str(artifacts["a"]), "--tasks", "spul_tiny_test_retain", "--include-path", str(exported),
                 "--limit", "4", "--with-base", "--dtype", "float32", "--device", "cpu", "--output", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| spul_tiny_test_retain | acc |" in table
    saved = json.loads(out.read_text())
    assert set(saved) >= {"artifact", "base"} and "spul_tiny_test_retain" in saved["base"]
    eco = save_artifact(None, tmp_path / "eco", {"method": "eco", "base_model": "x", "base_fingerprint": "0" * 64})
    assert main(["lm-eval", str(eco), "--tasks", "spul_tiny_test_retain", "--include-path", str(exported)]) != 0
    assert "ECO" in capsys.readouterr().err
