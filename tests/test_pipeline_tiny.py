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
    """The frozen model that SPUL trains against is the one in memory: its weights after training equal a copy
    taken before, and the soft prompt (the only trained tensor) moved away from its initialisation."""
    from spul.data.tasks import Task
    from spul.methods.registry import TrainJob, get_method, load_intervention
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import add_soft_prompt
    from spul.pipeline import prepare

    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False})
    data = prepare(cfg)
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ucfg = cfg.unlearn
    # the prompt the training starts from: the same seeded initialisation on a throwaway copy of the model
    init_model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    initial = add_soft_prompt(init_model, ucfg.prompt_encoder, ucfg.prompt_length, ucfg.prompt_init, tokenizer=tok,
                              seed=ucfg.seed, encoder_hidden_size=ucfg.encoder_hidden_size).get_prompt(batch_size=1)[0].detach().clone()
    job = TrainJob(model=cfg.model, task=Task(cfg.task), data=data, config=ucfg, artifact_dir=tmp_path / "artifact",
                   work_dir=tmp_path / "work", model_and_tokenizer=(model, tok))
    artifact = get_method("spul").train(job)
    after = model.state_dict()
    assert set(after) == set(snapshot)
    for k, v in after.items():
        assert torch.equal(v, snapshot[k]), k
    trained = load_intervention(artifact, model, tokenizer=tok).vectors
    assert trained.shape == initial.shape == (4, 64)
    assert (trained - initial).abs().max().item() > 1e-3  # the prompt did move
