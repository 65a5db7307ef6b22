"""The catalogue of bad inputs (docs/bad-inputs.md), each through the real CLI entry point.

For every case: a non-zero exit code, exactly one line on stderr that names the problem and the fix, no
traceback, and the files an earlier run left in the output folder are untouched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import yaml

SPLIT_NAMES = ("train_forget", "train_retain", "test_forget", "test_retain")


@pytest.fixture(scope="module")
def good_data(tmp_path_factory) -> Path:
    """A valid local data folder (four CSV files) cut from the generated reviews."""
    from spul.data.sources import DataConfig, load_unlearning_data
    from spul.data.tasks import Task

    folder = tmp_path_factory.mktemp("data") / "good"
    folder.mkdir()
    data = load_unlearning_data(DataConfig(limits={"train_forget": 8, "train_retain": 16, "test_forget": 8, "test_retain": 8}), Task())
    for split, df in data:
        df.to_csv(folder / f"{split.value}.csv", index=False)
    return folder


@pytest.fixture
def workspace(tmp_path, good_data, tiny_model_dir):
    """A config file, a copy of the data, and an output folder holding an earlier run's files."""
    data = tmp_path / "data"
    shutil.copytree(good_data, data)
    out = tmp_path / "run"
    (out / "report").mkdir(parents=True)
    (out / "report" / "results.md").write_text("| earlier results |\n")
    (out / "config.yaml").write_text("earlier: true\n")
    config = {
        "output_dir": str(out),
        "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu", "max_length": 64},
        "data": {"source": str(data)},
        "finetune": {"enabled": False},
        "unlearn": {"prompt_encoder": "prompt_tuning", "prompt_length": 4, "max_steps": 4, "batch_size": 8, "progress_bar": False, "save_steps": 1000},
        "evaluation": {"batch_size": 16, "progress": False, "cache": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"tmp": tmp_path, "data": data, "out": out, "config": path, "model": tiny_model_dir}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_untouched(folder: Path, before: dict[str, str]) -> None:
    """Every file an earlier run left is still there, byte for byte (new files, e.g. prepared data, may appear)."""
    after = snapshot(folder)
    assert {k: after.get(k) for k in before} == before


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from spul.interfaces.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, needles: tuple[str, ...]) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("spul: error:") and "Traceback" not in err, line
    assert "fix:" in line, f"the message names no fix: {line}"
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in: {line}"
    return line


# ---- the catalogue ------------------------------------------------------------------------------------------

def _edit_csv(split: str, change: Callable[[pd.DataFrame], pd.DataFrame]):
    def setup(ws):
        path = ws["data"] / f"{split}.csv"
        change(pd.read_csv(path)).to_csv(path, index=False)
        return []
    return setup


def _write(name: str, content: bytes, remove: str | None = None):
    def setup(ws):
        if remove:
            (ws["data"] / remove).unlink()
        (ws["data"] / name).write_bytes(content)
        return []
    return setup


def _overlap(ws):
    forget = pd.read_csv(ws["data"] / "train_forget.csv")
    retain = pd.read_csv(ws["data"] / "train_retain.csv")
    pd.concat([retain, forget.head(1)]).to_csv(ws["data"] / "train_retain.csv", index=False)
    return []


def _config_text(text: bytes):
    def setup(ws):
        ws["config"].write_bytes(text)
        return []
    return setup


def _empty_model_dir(ws):
    (ws["tmp"] / "empty_model").mkdir()
    return [f"model.name_or_path={ws['tmp'] / 'empty_model'}"]


def _artifact_without_metadata(ws):
    (ws["tmp"] / "art").mkdir()
    (ws["tmp"] / "art" / "adapter_config.json").write_text("{}")
    return ["--artifact", str(ws["tmp"] / "art")]


def _artifact_damaged_metadata(ws):
    (ws["tmp"] / "art").mkdir()
    (ws["tmp"] / "art" / "spul.json").write_text('{"base_fingerprint": "ab')  # cut mid-write by a crash
    return ["--artifact", str(ws["tmp"] / "art")]


def _mismatched_artifact(ws):
    """A real soft-prompt artifact made for another (differently initialised) tiny model."""
    from spul.artifacts import save_artifact
    from spul.models.loading import ModelConfig, load_model, weights_fingerprint
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt
    from spul.testing import build_tiny_llama

    other = build_tiny_llama(ws["tmp"] / "other_llama", seed=1)
    model, tok = load_model(ModelConfig(name_or_path=str(other), dtype="float32", device="cpu"))
    peft_model = add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, 4, tokenizer=tok)
    save_artifact(peft_model, ws["tmp"] / "art", {"method": "spul", "base_model": str(other), "base_fingerprint": weights_fingerprint(model),
                                                 "hyperparameters": {"prompt_length": 4}})
    return ["--artifact", str(ws["tmp"] / "art"), "--base", str(ws["model"])]


def _no_split_file(ws):
    (ws["data"] / "test_forget.csv").unlink()
    return []


def _missing_files_entry(ws):
    return [f"data.files.train_forget={ws['tmp'] / 'nope.csv'}"]


def _single_file_source(ws):
    return [f"data.source={ws['data'] / 'train_forget.csv'}"]


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    command: str
    overrides: tuple[str, ...] = ()
    setup: Callable | None = None
    needles: tuple[str, ...] = ()


CASES = [
    # configuration
    Case("config_file_missing", "--config names a file that does not exist", "config", setup=lambda ws: ws["config"].unlink() or [], needles=("does not exist",)),
    Case("config_bad_yaml", "config file is not valid YAML", "config", setup=_config_text(b"model: [unclosed\n"), needles=("not valid YAML", "line")),
    Case("config_not_mapping", "config file is a YAML list, not sections", "config", setup=_config_text(b"- a\n- b\n"), needles=("mapping",)),
    Case("config_not_utf8", "config file is not UTF-8", "config", setup=_config_text(b"model:\n  name_or_path: caf\xe9\n"), needles=("UTF-8",)),
    Case("unknown_top_level_key", "unknown top-level key (typo)", "config", ("modle.dtype=float32",), needles=("modle",)),
    Case("unknown_nested_key", "unknown key inside a section", "config", ("unlearn.alfa=0.1",), needles=("unlearn.alfa", "alpha")),
    Case("negative_learning_rate", "negative learning rate", "config", ("unlearn.learning_rate=-1e-4",), needles=("learning_rate",)),
    Case("unknown_enum_value", "value outside an enum", "config", ("unlearn.prompt_encoder=lstm",), needles=("prompt_encoder", "p_tuning")),
    Case("wrong_type", "text where a number is expected", "config", ("unlearn.batch_size=many",), needles=("batch_size", "int")),
    Case("bad_bool", "a boolean that is neither true nor false", "config", ("finetune.enabled=maybe",), needles=("finetune.enabled", "true or false")),
    Case("override_without_equals", "command-line override without '='", "config", ("unlearn.alpha",), needles=("key=value",)),
    Case("template_without_text", "task template without {text}", "config", ("task.template='Answer: {label}'",), needles=("{text}",)),
    Case("generic_label_is_task_label", "a generic label equal to a task label", "config", ("task.generic_labels=[positive]",), needles=("generic",)),
    Case("invalid_device", "model.device that is not a device", "config", ("model.device=tpu",), needles=("model.device",)),
    Case("zero_limit", "data.limits of 0 rows", "config", ("data.limits.train_forget=0",), needles=("data.limits.train_forget",)),
    Case("unknown_eval_split", "evaluation.splits names an unknown split", "config", ("evaluation.splits=[dev]",), needles=("evaluation.splits",)),
    # data
    Case("data_folder_missing", "data.source folder does not exist", "prepare", ("data.source=/nonexistent/spul/data",), needles=("data.source",)),
    Case("data_source_single_file", "data.source is one file, not four splits", "prepare", setup=_single_file_source, needles=("single file",)),
    Case("split_file_missing", "one of the four split files is absent", "prepare", setup=_no_split_file, needles=("test_forget",)),
    Case("files_entry_missing", "data.files points at a missing file", "prepare", setup=_missing_files_entry, needles=("does not exist",)),
    Case("two_files_for_split", "two files match the same split", "prepare", setup=_write("train_forget.jsonl", b'{"text": "x", "label": 0}\n'), needles=("several files",)),
    Case("wrong_columns", "the text column is called differently", "prepare", setup=_edit_csv("train_retain", lambda d: d.rename(columns={"text": "sentence"})), needles=("no column 'text'", "data.text_column")),
    Case("empty_split", "a split file with a header and no rows", "prepare", setup=_edit_csv("test_retain", lambda d: d.head(0)), needles=("empty",)),
    Case("empty_text", "a row whose text is empty", "prepare", setup=_edit_csv("train_forget", lambda d: d.assign(text=[""] + d["text"].tolist()[1:])), needles=("empty text",)),
    Case("overlapping_splits", "the same text in train_forget and train_retain", "prepare", setup=_overlap, needles=("both train_forget and train_retain",)),
    Case("label_outside_label_set", "a label id the task does not have", "prepare", setup=_edit_csv("train_forget", lambda d: d.assign(label=[7] + d["label"].tolist()[1:])), needles=("label 7",)),
    Case("data_not_utf8", "a data file in Latin-1", "prepare", setup=_write("test_forget.csv", b"text,label\ncaf\xe9 is great,1\n", remove="test_forget.csv"), needles=("UTF-8",)),
    Case("data_malformed_jsonl", "a JSON-lines file that is not JSON", "prepare", setup=_write("test_forget.jsonl", b"{not json\n", remove="test_forget.csv"), needles=("could not be parsed",)),
    # model
    Case("model_path_missing", "model folder does not exist", "evaluate", ("model.name_or_path=/nonexistent/spul/model",), needles=("does not exist",)),
    Case("model_folder_without_config", "model folder without config.json", "evaluate", setup=_empty_model_dir, needles=("config.json",)),
    Case("label_words_not_in_vocabulary", "label words the tokenizer maps to <unk>", "evaluate", ("task.label_words=[zzbad,zzgood]",), needles=("unknown to the tokenizer",)),
    Case("max_length_too_small", "model.max_length leaves no room for the text", "evaluate", ("model.max_length=16",), needles=("model.max_length",)),
    Case("cuda_without_gpu", "model.device=cuda on a machine without CUDA", "evaluate", ("model.device=cuda",), needles=("CUDA",)),
    # artifacts
    Case("artifact_missing", "--artifact folder does not exist", "evaluate", ("--artifact", "/nonexistent/spul/artifact"), needles=("does not exist",)),
    Case("artifact_without_metadata", "a folder that is not a spul artifact", "evaluate", setup=_artifact_without_metadata, needles=("spul.json",)),
    Case("artifact_damaged_metadata", "spul.json cut short", "evaluate", setup=_artifact_damaged_metadata, needles=("not valid JSON",)),
    Case("artifact_for_other_model", "artifact trained on another base model", "evaluate", setup=_mismatched_artifact, needles=("fingerprint",)),
    Case("audit_artifact_missing", "spul audit of an artifact that does not exist", "audit", ("--artifact", "/nonexistent/spul/artifact"), needles=("does not exist",)),
    Case("audit_bad_setting", "spul audit with an invalid audit setting", "audit", ("audit.min_k=2",), needles=("audit.min_k",)),
    # resources
    Case("out_of_memory_real", "an allocation the machine cannot satisfy (P-tuning MLP of 10^11 units)", "unlearn",
         ("unlearn.prompt_encoder=p_tuning", "unlearn.encoder_hidden_size=100000000000"), needles=("out of memory",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, workspace, capsys):
    extra = list(case.setup(workspace)) if case.setup else []
    capsys.readouterr()  # what the test's own setup printed
    before = snapshot(workspace["out"])
    argv = [case.command, "--config", str(workspace["config"]), *case.overrides, *extra]
    rc, err = run_cli(argv, capsys)
    assert_one_line_error(rc, err, case.needles)
    assert_untouched(workspace["out"], before)


# ---- cases that need more than a file change ---------------------------------------------------------------

def test_nan_loss_stops_training_with_one_line(workspace, capsys):
    """A learning rate of 1e30 blows the prompt up to inf within a few steps: AnswerTrainer.record stops it."""
    before = snapshot(workspace["out"])
    rc, err = run_cli(["unlearn", "--config", str(workspace["config"]), "unlearn.learning_rate=1e30", "unlearn.max_grad_norm=1e30",
                       "unlearn.warmup_ratio=0", "unlearn.max_steps=6"], capsys)
    line = assert_one_line_error(rc, err, ("loss became", "learning rate"))
    assert "nan" in line.lower() or "inf" in line.lower()
    assert not (workspace["out"] / "artifact").exists()
    assert_untouched(workspace["out"], before)


def test_fsdp_launch_of_weight_training_is_refused(workspace, capsys, monkeypatch):
    """Only soft-prompt training shards the frozen weights; the LoRA fine-tune under a FSDP launch stops at once."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch --config_file fsdp.yaml sets
    monkeypatch.setenv("WORLD_SIZE", "2")
    before = snapshot(workspace["out"])
    rc, err = run_cli(["finetune", "--config", str(workspace["config"]), "finetune.enabled=true"], capsys)
    assert_one_line_error(rc, err, ("cannot run under a FSDP launch", "ddp.yaml"))
    assert_untouched(workspace["out"], before)


@pytest.mark.parametrize("exc", [MemoryError(), "torch_oom"], ids=["memory_error", "torch_out_of_memory"])
def test_out_of_memory_simulated(exc, workspace, capsys, monkeypatch):
    """Simulated (a real device OOM cannot be triggered cheaply): the step raising it is patched."""
    import torch

    import spul.pipeline

    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB") if exc == "torch_oom" else exc

    def boom(*a, **k):
        raise error

    monkeypatch.setattr(spul.pipeline, "prepare", boom)
    before = snapshot(workspace["out"])
    rc, err = run_cli(["prepare", "--config", str(workspace["config"])], capsys)
    assert_one_line_error(rc, err, ("out of memory", "batch size"))
    assert rc == 3
    assert_untouched(workspace["out"], before)


def test_interrupt_keeps_outputs_and_says_how_to_resume(workspace, capsys, monkeypatch):
    import spul.pipeline

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(spul.pipeline, "prepare", stop)
    before = snapshot(workspace["out"])
    rc, err = run_cli(["prepare", "--config", str(workspace["config"])], capsys)
    lines = err.strip().splitlines()
    assert rc == 130 and len(lines) == 1 and "run the same command again" in lines[0]
    assert_untouched(workspace["out"], before)


def test_huge_text_is_truncated_with_a_warning(workspace, capsys, caplog):
    path = workspace["data"] / "test_retain.csv"
    df = pd.read_csv(path)
    df.loc[0, "text"] = " ".join(["great"] * 20000)
    df.to_csv(path, index=False)
    with caplog.at_level("WARNING", logger="spul.data.encoding"):
        rc, err = run_cli(["evaluate", "--config", str(workspace["config"])], capsys)
    assert rc == 0, err
    assert any("truncated" in r.getMessage() and "model.max_length" in r.getMessage() for r in caplog.records)
    results = json.loads((workspace["out"] / "report" / "results.json").read_text())
    assert results["results"][0]["metrics"]["test_retain"]["n"] == len(df) if "n" in results["results"][0]["metrics"]["test_retain"] else True


def test_tokenizer_without_pad_token_falls_back_to_eos(workspace, capsys, tmp_path):
    from transformers import AutoTokenizer

    from spul.models.loading import load_tokenizer

    model_dir = tmp_path / "nopad"
    shutil.copytree(workspace["model"], model_dir)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = model_dir / name
        if path.is_file():
            cfg = json.loads(path.read_text())
            cfg.pop("pad_token", None)
            path.write_text(json.dumps(cfg))
    assert AutoTokenizer.from_pretrained(model_dir).pad_token is None
    tok = load_tokenizer(str(model_dir))
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    rc, err = run_cli(["evaluate", "--config", str(workspace["config"]), f"model.name_or_path={model_dir}"], capsys)
    assert rc == 0, err


def test_one_line_in_a_real_subprocess(workspace):
    """The same guarantee outside pytest's capture: a fresh interpreter, real stderr."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "spul.interfaces.cli", "evaluate", "--config", str(workspace["config"]), "model.max_length=16"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, ("model.max_length",))
