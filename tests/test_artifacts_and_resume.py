"""Artifacts load with PEFT, refuse other base models, and training resumes from checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config
from spul.errors import ArtifactError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    from spul.pipeline import unlearn

    tmp = tmp_path_factory.mktemp("art")
    cfg = tiny_run_config(tmp, tiny_model_dir, finetune={"enabled": False})
    return cfg, unlearn(cfg)


def test_artifact_loads_with_plain_peft_and_has_metadata(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, artifact = trained
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(artifact))
    assert model.peft_config["default"].num_virtual_tokens == 4
    meta = json.loads((artifact / "spul.json").read_text())
    for key in ("base_model", "base_fingerprint", "tokenizer", "task", "hyperparameters", "data", "trainable_parameters"):
        assert key in meta
    assert meta["task"]["label_words"] == ["negative", "positive"]
    assert meta["hyperparameters"]["alpha"] == 0.5
    assert set(meta["data"]["fingerprints"]) == {"train_forget", "train_retain", "test_forget", "test_retain"}
    assert not list(artifact.glob("*.bin")) and not list(artifact.glob("*.pt"))  # no pickle


def test_artifact_is_refused_on_a_different_base_model(trained, tmp_path):
    from spul.artifacts import load_soft_prompt
    from spul.models.loading import ModelConfig, load_model
    from spul.testing import build_tiny_llama

    _, artifact = trained
    other_dir = build_tiny_llama(tmp_path / "other", seed=1)
    other, _ = load_model(ModelConfig(name_or_path=str(other_dir), dtype="float32", device="cpu"))
    with pytest.raises(ArtifactError, match="trained on base model .* fix: load the artifact onto the model"):
        load_soft_prompt(other, artifact)


def test_artifact_accepts_its_own_base_in_another_dtype(trained, tiny_model_dir):
    from spul.artifacts import load_soft_prompt
    from spul.models.loading import ModelConfig, load_model

    _, artifact = trained
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="bfloat16", device="cpu"))
    peft_model, meta = load_soft_prompt(model, artifact)
    assert meta["method"] == "spul"


def test_damaged_artifact_gives_a_clear_error(trained, tmp_path):
    from spul.artifacts import read_metadata

    _, artifact = trained
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    (broken / "spul.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_metadata(broken)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_metadata(tmp_path / "missing")


def test_interrupted_training_resumes_to_the_same_prompt(tmp_path, tiny_model_dir):
    from spul.pipeline import unlearn

    settings = {"finetune": {"enabled": False}, "unlearn": {"num_epochs": 2, "save_steps": 3, "seed": 5}}
    full = unlearn(tiny_run_config(tmp_path / "full", tiny_model_dir, **settings), resume=False)
    # a run that dies right after its first checkpoint (step 3), then the same command again
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt

    part_cfg = tiny_run_config(tmp_path / "part", tiny_model_dir, **settings)
    with pytest.raises(KeyboardInterrupt):
        unlearn(part_cfg, callbacks=[Crash()])
    assert (part_cfg.out / "unlearn" / "checkpoints" / "checkpoint-3").is_dir()
    assert not (part_cfg.out / "artifact").exists()
    resumed = unlearn(part_cfg)
    meta = json.loads((resumed / "spul.json").read_text())
    assert meta["training"]["resumed_from"].endswith("checkpoint-3")
    a = load_file(str(full / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter_model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
