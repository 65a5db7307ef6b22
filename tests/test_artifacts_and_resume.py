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


@pytest.mark.parametrize("encoder", ["prompt_tuning", "p_tuning"])
def test_interrupted_training_resumes_to_the_same_prompt(tmp_path, tiny_model_dir, encoder):
    from spul.pipeline import unlearn

    settings = {"finetune": {"enabled": False},
                "unlearn": {"num_epochs": 2, "save_steps": 3, "seed": 5, "prompt_encoder": encoder, "encoder_hidden_size": 16}}
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

    # the same command once more: the finished artifact is kept as it is, byte for byte
    before = {p.name: p.read_bytes() for p in resumed.iterdir()}
    again = unlearn(part_cfg)
    assert {p.name: p.read_bytes() for p in again.iterdir()} == before


def _p_tuning_settings(**unlearn):
    return {"finetune": {"enabled": False},
            "unlearn": {"prompt_encoder": "p_tuning", "encoder_hidden_size": 16, "max_steps": 4, "save_steps": 2, **unlearn}}


def test_changed_inputs_are_refused_not_silently_resumed(tmp_path, tiny_model_dir, capsys):
    """A new learning rate, alpha or data in the same output folder must not reuse the old checkpoints."""
    from spul.configuration import dump_yaml
    from spul.errors import ConfigError
    from spul.interfaces.cli import main
    from spul.pipeline import unlearn

    cfg = tiny_run_config(tmp_path, tiny_model_dir, **_p_tuning_settings())
    first = unlearn(cfg)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    for change, word in ((dict(learning_rate=5e-2), "learning_rate"), (dict(alpha=0.9), "alpha"), (dict(beta=0.1), "beta")):
        changed = tiny_run_config(tmp_path, tiny_model_dir, **_p_tuning_settings(**change))
        with pytest.raises(ConfigError, match=f"other inputs .*{word}.*--no-resume"):
            unlearn(changed)
    more_data = tiny_run_config(tmp_path, tiny_model_dir, **_p_tuning_settings(),
                                data={"limits": {"train_forget": 12, "train_retain": 32, "test_forget": 8, "test_retain": 16}})
    with pytest.raises(ConfigError, match="data.train_forget"):
        unlearn(more_data)
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # nothing lost
    # the same through the CLI (spul run too): one line, exit 2
    path = tmp_path / "changed.yaml"
    path.write_text(dump_yaml(tiny_run_config(tmp_path, tiny_model_dir, **_p_tuning_settings(learning_rate=5e-2))))
    for command in ("unlearn", "run"):
        capsys.readouterr()
        assert main([command, "--config", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "learning_rate" in err[0] and "--no-resume" in err[0], err
    # --no-resume starts over with the new settings
    changed = tiny_run_config(tmp_path, tiny_model_dir, **_p_tuning_settings(learning_rate=5e-2))
    fresh = unlearn(changed, resume=False)
    meta = json.loads((fresh / "spul.json").read_text())
    assert meta["training"]["resumed_from"] is None and meta["hyperparameters"]["learning_rate"] == 5e-2
    assert (fresh / "adapter_model.safetensors").read_bytes() != before["adapter_model.safetensors"]  # retrained


def test_p_tuning_checkpoint_holds_the_encoder_weights(tmp_path, tiny_model_dir):
    from spul.pipeline import unlearn

    cfg = tiny_run_config(tmp_path, tiny_model_dir, **_p_tuning_settings())
    unlearn(cfg)
    state = load_file(str(cfg.out / "unlearn" / "checkpoints" / "checkpoint-4" / "trainable_state.safetensors"))
    assert any("mlp_head" in name for name in state) and any("embedding" in name for name in state), sorted(state)
