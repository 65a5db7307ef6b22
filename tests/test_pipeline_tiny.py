"""End to end on a tiny randomly initialised Llama built in the test: prepare → finetune → unlearn → evaluate."""

from __future__ import annotations

import json

import torch

from conftest import tiny_run_config


def test_whole_pipeline_runs_and_reports(tmp_path, tiny_model_dir):
    from spul.pipeline import run

    cfg = tiny_run_config(tmp_path, tiny_model_dir)
    results = run(cfg)
    assert [r.name for r in results] == ["Base (familiarized)", "SPUL (p=4)"]
    for r in results:
        assert set(r.metrics) == {"train_forget", "train_retain", "test_forget", "test_retain"}
        for m in r.metrics.values():
            assert 0.0 <= m.accuracy <= 1.0 and 0.0 <= m.generic_rate <= 1.0
    report = json.loads((cfg.out / "report" / "results.json").read_text())
    assert len(report["results"]) == 2
    assert "| Method |" in (cfg.out / "report" / "results.md").read_text()
    meta = json.loads((cfg.out / "artifact" / "spul.json").read_text())
    assert meta["trainable_parameters"] == 4 * 64
    assert meta["data"]["sizes"]["train_forget"] == 16
    # predictions are stored per example
    lines = (cfg.out / "report" / "predictions" / "spul_p_4_test_forget.jsonl").read_text().splitlines()
    assert len(lines) == 8 and {"prediction", "label", "loglik"} <= set(json.loads(lines[0]))


def test_unlearning_leaves_base_weights_bit_identical(tmp_path, tiny_model_dir):
    from spul.models.loading import ModelConfig, load_model
    from spul.pipeline import unlearn

    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False})
    before, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    snapshot = {k: v.clone() for k, v in before.state_dict().items()}
    artifact = unlearn(cfg)
    after, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    for k, v in after.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    # and the prompt did move away from its initialisation
    from safetensors.torch import load_file

    weights = load_file(str(artifact / "adapter_model.safetensors"))
    assert len(weights) == 1 and next(iter(weights.values())).shape == (4, 64)
