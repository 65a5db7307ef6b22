"""Portable, shareable artifacts: absolute base references, readable file modes, a real model card, push."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import tiny_run_config

from spul.io import atomic_dir, read_json, write_json, write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)])
def test_atomic_writes_get_the_modes_of_the_users_umask(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        text = write_text(tmp_path / "a.txt", "x")
        data = write_json(tmp_path / "sub" / "b.json", {"a": 1})
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inner.bin").write_bytes(b"1")
    finally:
        os.umask(old)
    assert _mode(text) == file_mode and _mode(data) == file_mode
    assert _mode(tmp_path / "folder") == dir_mode and _mode(tmp_path / "folder" / "inner.bin") == file_mode


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory, tiny_model_dir):
    """The tiny pipeline run from its own folder with a *relative* output_dir, as a user would."""
    from spul.pipeline import run

    work = tmp_path_factory.mktemp("work")
    cfg = tiny_run_config(work, tiny_model_dir)
    cfg.output_dir = "runs/rel"
    old_cwd, old_mask = os.getcwd(), os.umask(0o022)
    try:
        os.chdir(work)
        results = run(cfg)
    finally:
        os.chdir(old_cwd)
        os.umask(old_mask)
    return work / "runs" / "rel", results


def test_artifact_names_its_base_absolutely(relative_run, tmp_path):
    out, _ = relative_run
    artifact = out / "artifact"
    meta = read_json(artifact / "spul.json")
    assert os.path.isabs(meta["base_model"]) and Path(meta["base_model"]) == (out / "familiarized" / "model").resolve()
    assert meta["base_model_path"] == meta["base_model"]
    assert os.path.isabs(meta["pretrained_model"]) and Path(meta["pretrained_model"], "config.json").is_file()
    fam = meta["familiarization"]
    assert Path(fam["adapter"], "adapter_config.json").is_file() and Path(fam["merged_model"], "config.json").is_file()
    assert os.path.isabs(fam["adapter"]) and os.path.isabs(fam["merged_model"])
    # the familiarisation LoRA names the pretrained model; the soft prompt names the familiarised base, both absolute
    assert read_json(Path(fam["adapter"]) / "adapter_config.json")["base_model_name_or_path"] == meta["pretrained_model"]
    assert read_json(artifact / "adapter_config.json")["base_model_name_or_path"] == meta["base_model"]
    # plain PEFT loads it from an unrelated working directory
    from peft import AutoPeftModelForCausalLM

    old_cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        model = AutoPeftModelForCausalLM.from_pretrained(str(artifact))
    finally:
        os.chdir(old_cwd)
    assert model.peft_config["default"].num_virtual_tokens == meta["hyperparameters"]["prompt_length"]


def test_artifact_files_are_readable_by_others(relative_run):
    out, _ = relative_run
    artifact = out / "artifact"
    assert _mode(artifact) == 0o755 and _mode(out / "familiarized" / "model") == 0o755
    for path in artifact.rglob("*"):
        assert _mode(path) == (0o755 if path.is_dir() else 0o644), path


def test_model_card_says_what_was_forgotten_and_how_to_load(relative_run):
    out, results = relative_run
    card = (out / "artifact" / "README.md").read_text(encoding="utf-8")
    meta = read_json(out / "artifact" / "spul.json")
    assert "## What was forgotten" in card and "generated:reviews" in card
    for word in meta["task"]["label_words"] + meta["task"]["generic_labels"]:
        assert f"`{word}`" in card
    assert meta["task"]["template"].replace("\n", "\\n") in card
    assert "AutoPeftModelForCausalLM" in card and 'padding_side = "left"' in card and "## Limits" in card
    assert "Not evaluated yet" not in card and results[-1].name in card  # the evaluation table was written in


def test_push_to_a_local_target_and_load_from_there(relative_run, tmp_path, capsys):
    from spul.interfaces.cli import main

    out, _ = relative_run
    artifact = out / "artifact"
    (artifact / "checkpoints").mkdir(exist_ok=True)
    (artifact / "checkpoints" / "junk.bin").write_bytes(b"x")
    try:
        assert main(["push", str(artifact), "--repo", "me/tiny-forget", "--to-dir", str(tmp_path / "hub")]) == 0
    finally:
        (artifact / "checkpoints" / "junk.bin").unlink()
        (artifact / "checkpoints").rmdir()
    pushed = tmp_path / "hub" / "me" / "tiny-forget"
    assert "pushed" in capsys.readouterr().out
    assert sorted(p.name for p in pushed.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in artifact.iterdir() if p.name != "checkpoints")
    assert (pushed / "spul.json").read_bytes() == (artifact / "spul.json").read_bytes()
    assert not (pushed / "checkpoints").exists()
    # the pushed copy is a working artifact: spul's loader accepts it on its base model
    from spul.artifacts import load_soft_prompt
    from spul.models.loading import ModelConfig, load_model

    meta = read_json(pushed / "spul.json")
    model, _ = load_model(ModelConfig(name_or_path=meta["base_model"], dtype="float32", device="cpu"))
    peft_model, _ = load_soft_prompt(model, pushed)
    assert peft_model.peft_config["default"].num_virtual_tokens == meta["hyperparameters"]["prompt_length"]


def test_push_errors_are_one_line(relative_run, tmp_path, capsys):
    from spul.interfaces.cli import main

    out, _ = relative_run
    assert main(["push", str(out / "artifact"), "--repo", "not a repo", "--to-dir", str(tmp_path)]) == 2
    assert main(["push", str(tmp_path), "--repo", "me/x", "--to-dir", str(tmp_path / "hub")]) != 0
    # the real huggingface_hub client against an endpoint nobody listens on: a one-line error, nothing written
    code = main(["push", str(out / "artifact"), "--repo", "me/x", "--token", "hf_test", "--endpoint", "http://127.0.0.1:9"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("spul:")]
    assert code == 4 and len(err) == 3 and "push to 'me/x' failed" in err[-1] and "fix:" in err[-1]
