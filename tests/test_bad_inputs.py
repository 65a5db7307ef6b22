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
    assert "spul: error: unexpected" not in line and "report it" not in line, f"a fixable input reported as a bug: {line}"
    print(f"\n[catalogue] {line}")
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


# ---- setups of the hardening cases (issue 15) ---------------------------------------------------------------

def _config_append(text: str):
    def setup(ws):
        with open(ws["config"], "a") as fh:
            fh.write(text)
        return []
    return setup


def _config_is_folder(ws):
    ws["config"].unlink()
    ws["config"].mkdir()
    return []


def _output_dir_is_file(ws):
    target = ws["tmp"] / "a_file"
    target.write_text("not a folder\n")
    return [f"output_dir={target}"]


def _output_dir_read_only(ws):
    import os

    folder = ws["tmp"] / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores permission bits: use a folder on a read-only file system instead
        return ["output_dir=/sys/spul_read_only_run"]
    return [f"output_dir={folder / 'run'}"]


def _good_artifact(ws, name="art"):
    """A real soft-prompt artifact for the workspace's tiny model (no training: the vocabulary init)."""
    from spul.artifacts import save_artifact
    from spul.models.loading import ModelConfig, load_model, weights_fingerprint
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt

    model, tok = load_model(ModelConfig(name_or_path=str(ws["model"]), dtype="float32", device="cpu"))
    peft_model = add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, 4, tokenizer=tok)
    folder = ws["tmp"] / name
    save_artifact(peft_model, folder, {"method": "spul", "base_model": str(ws["model"]), "base_fingerprint": weights_fingerprint(model),
                                       "hyperparameters": {"prompt_length": 4}})
    return folder


def _artifact_change(change: Callable[[Path], None]):
    def setup(ws):
        folder = _good_artifact(ws)
        change(folder)
        return ["--artifact", str(folder)]
    return setup


def _truncate(name: str, keep: int = 40):
    def change(folder: Path):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep])
    return change


def _nan_prompt(folder: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k: v * float("nan") for k, v in weights.items()}, str(folder / "adapter_model.safetensors"))


def _meta_change(**fields):
    def change(folder: Path):
        meta = json.loads((folder / "spul.json").read_text())
        meta.update(fields)
        (folder / "spul.json").write_text(json.dumps(meta))
    return change


def _meta_text(text: str):
    def change(folder: Path):
        (folder / "spul.json").write_text(text)
    return change


def _model_copy_change(change: Callable[[Path], None]):
    def setup(ws):
        folder = ws["tmp"] / "model_copy"
        shutil.copytree(ws["model"], folder)
        change(folder)
        return [f"model.name_or_path={folder}"]
    return setup


def _truncate_weights(folder: Path):
    path = next(folder.glob("*.safetensors"))
    path.write_bytes(path.read_bytes()[:100])


def _damage_model_config(folder: Path):
    (folder / "config.json").write_text('{"model_type": "llama", ')


def _no_tokenizer(folder: Path):
    for path in folder.iterdir():
        if "token" in path.name or path.name in ("vocab.json", "merges.txt"):
            path.unlink()


def _data_change(split: str, content: bytes):
    def setup(ws):
        (ws["data"] / f"{split}.csv").write_bytes(content)
        return []
    return setup


def _split_is_folder(ws):
    (ws["data"] / "test_retain.csv").unlink()
    (ws["data"] / "test_retain.csv").mkdir()
    return []


def _earlier_finetune_checkpoints(ws):
    """An earlier fine-tune whose model was lost (e.g. interrupted at the save): only its checkpoints remain."""
    from spul.configuration import load_config
    from spul.pipeline import RunConfig, finetune

    overrides = ["finetune.enabled=true", "finetune.max_steps=2", "finetune.save_steps=1", "finetune.batch_size=8", "finetune.lora_r=2",
                 "finetune.progress_bar=false"]
    finetune(load_config(RunConfig, ws["config"], overrides + ["finetune.learning_rate=1e-3"]))
    shutil.rmtree(ws["out"] / "familiarized" / "model")
    (ws["out"] / "familiarized" / "done.json").unlink()
    return overrides + ["finetune.learning_rate=5e-3"]


def _earlier_checkpoints(ws):
    """An earlier unlearn run in the same output folder (4 steps, checkpoints kept) with lr 1e-2."""
    from spul.configuration import load_config
    from spul.pipeline import RunConfig, unlearn

    cfg = load_config(RunConfig, ws["config"], ["unlearn.save_steps=2", "unlearn.learning_rate=1e-2"])
    unlearn(cfg)
    return ["unlearn.save_steps=2", "unlearn.learning_rate=5e-2"]


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
    # ---- issue 15: silent wrong results and generic messages ----
    Case("duplicate_yaml_section", "a config section given twice (YAML would keep only the last)", "config",
         setup=_config_append("model:\n  dtype: bfloat16\n"), needles=("'model' appears twice", "keep one")),
    Case("duplicate_yaml_key", "a key given twice inside one section", "config",
         setup=_config_text(b"unlearn:\n  alpha: 0.1\n  alpha: 0.9\n"), needles=("'alpha' appears twice",)),
    Case("nan_in_config", "NaN as a config value", "config", ("unlearn.alpha=.nan",), needles=("unlearn.alpha", "finite")),
    Case("inf_in_config", "infinity as a config value", "config", ("unlearn.learning_rate=.inf",), needles=("unlearn.learning_rate", "finite")),
    Case("nan_text_in_config", "'nan' written as text where a number is expected", "config", ("unlearn.beta=nan",), needles=("unlearn.beta", "finite")),
    Case("max_steps_zero", "max_steps=0 (would train one step)", "config", ("unlearn.max_steps=0",), needles=("max_steps", "-1")),
    Case("max_steps_negative", "max_steps below -1", "config", ("unlearn.max_steps=-5",), needles=("max_steps",)),
    Case("lr_scheduler_typo", "a learning-rate schedule with a typo", "config", ("unlearn.lr_scheduler=cosin",), needles=("lr_scheduler", "'cosine'")),
    Case("finetune_lr_scheduler_typo", "an unknown schedule in the fine-tune section", "config", ("finetune.lr_scheduler=triangle",), needles=("lr_scheduler", "use one of")),
    Case("negative_alpha", "a negative loss weight", "config", ("unlearn.alpha=-1",), needles=("unlearn.alpha",)),
    Case("prompt_length_zero", "a soft prompt of 0 tokens", "config", ("unlearn.prompt_length=0",), needles=("prompt_length",)),
    Case("warmup_ratio_above_one", "warmup_ratio of 1.5", "config", ("unlearn.warmup_ratio=1.5",), needles=("warmup_ratio",)),
    Case("batch_size_zero", "batch_size of 0", "config", ("unlearn.batch_size=0",), needles=("batch_size",)),
    Case("save_steps_zero", "save_steps of 0", "config", ("unlearn.save_steps=0",), needles=("save_steps",)),
    Case("encoder_hidden_size_zero", "a P-tuning MLP of 0 units", "config", ("unlearn.encoder_hidden_size=0",), needles=("encoder_hidden_size",)),
    Case("unknown_precision", "an unknown precision", "config", ("unlearn.precision=fp8",), needles=("precision", "bf16")),
    Case("section_not_mapping", "a section given as a number", "config", ("model=3",), needles=("'model'", "mapping")),
    Case("empty_output_dir", "output_dir set to nothing", "config", ("output_dir=' '",), needles=("output_dir",)),
    Case("prompt_init_text_missing", "prompt_init=text without a text", "config", ("unlearn.prompt_init=text",), needles=("prompt_init_text",)),
    Case("config_is_folder", "--config names a folder", "config", setup=_config_is_folder, needles=("is a folder",)),
    # output folder
    Case("output_dir_is_file", "output_dir is an existing file", "prepare", setup=_output_dir_is_file, needles=("is a file where a folder is needed", "output_dir")),
    Case("output_dir_read_only", "output_dir on a read-only place", "prepare", setup=_output_dir_read_only, needles=("output_dir",)),
    # data
    Case("label_column_missing", "a split without a label column", "prepare", setup=_data_change("test_retain", b"text\nfine film\n"), needles=("label",)),
    Case("label_not_a_number", "labels written as words the task does not map", "prepare",
         setup=_data_change("test_retain", b"text,label\nfine film,maybe\n"), needles=("label",)),
    Case("split_file_is_folder", "a split 'file' that is a folder", "prepare", setup=_split_is_folder, needles=("test_retain",)),
    Case("split_only_header_blank", "a split file that is completely empty (0 bytes)", "prepare", setup=_data_change("test_forget", b""), needles=("test_forget",)),
    # model
    Case("model_weights_truncated", "model weights cut short (truncated safetensors)", "evaluate", setup=_model_copy_change(_truncate_weights), needles=("damaged",)),
    Case("model_config_damaged", "model config.json cut short", "evaluate", setup=_model_copy_change(_damage_model_config), needles=("config.json",)),
    Case("model_without_tokenizer", "a model folder without tokenizer files", "evaluate", setup=_model_copy_change(_no_tokenizer), needles=("tokenizer",)),
    # artifacts
    Case("artifact_weights_truncated", "artifact adapter_model.safetensors cut short", "evaluate",
         setup=_artifact_change(_truncate("adapter_model.safetensors")), needles=("could not be loaded",)),
    Case("artifact_nan_prompt", "an artifact whose prompt is all NaN", "evaluate", setup=_artifact_change(_nan_prompt), needles=("NaN",)),
    Case("artifact_fingerprint_not_text", "spul.json with a numeric base_fingerprint", "evaluate",
         setup=_artifact_change(_meta_change(base_fingerprint=12345)), needles=("base_fingerprint",)),
    Case("artifact_metadata_is_list", "spul.json holding a JSON list", "evaluate", setup=_artifact_change(_meta_text("[1, 2]")), needles=("fingerprint",)),
    Case("artifact_metadata_huge", "spul.json of 5 MB", "evaluate", setup=_artifact_change(_meta_change(padding="x" * 5_000_000)), needles=("bytes",)),
    Case("artifact_adapter_config_damaged", "adapter_config.json cut short", "evaluate",
         setup=_artifact_change(_truncate("adapter_config.json", 10)), needles=("could not be loaded",)),
    # resume
    Case("resume_with_changed_lr", "unlearn again in the same output_dir with a new learning rate", "unlearn",
         setup=_earlier_checkpoints, needles=("other inputs", "learning_rate", "--no-resume")),
    Case("finetune_resume_with_changed_lr", "finetune again in the same output_dir with a new learning rate (an earlier one was interrupted)",
         "finetune", setup=_earlier_finetune_checkpoints, needles=("finetune checkpoints", "other inputs", "finetune.learning_rate", "--no-resume")),
    Case("run_resume_with_changed_lr", "spul run again in the same output_dir with a new learning rate", "run",
         setup=_earlier_checkpoints, needles=("other inputs", "learning_rate", "--no-resume")),
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


# ---- spul serve: keys file and server settings (checked before the model loads; nothing is served) ------------

KEY = "key-aaaaaaaa-0001"


@dataclass(frozen=True)
class ServeCase:
    id: str
    description: str
    keys_yaml: str | None = f"keys:\n  {KEY}: base\n"
    args: tuple[str, ...] = ()
    needles: tuple[str, ...] = ()


SERVE_CASES = [
    ServeCase("keys_file_missing", "--keys names a file that does not exist", None, needles=("keys file", "does not exist")),
    ServeCase("keys_not_yaml", "keys file is not valid YAML", "keys: [unclosed\n", needles=("not valid YAML",)),
    ServeCase("keys_is_list", "keys: given as a list instead of key → policy", "keys: [a, b]\n", needles=("not a mapping",)),
    ServeCase("keys_duplicate", "the same API key twice (the second would silently rebind it)", f"keys:\n  {KEY}: a\n  {KEY}: b\n", needles=("appears twice",)),
    ServeCase("keys_too_short", "an API key shorter than 8 characters", "keys:\n  short: base\n", needles=("shorter than 8",)),
    ServeCase("admin_keys_mapping", "admin_keys given as a mapping", f"keys:\n  {KEY}: base\nadmin_keys: {{a: b}}\n", needles=("admin_keys", "not a list")),
    ServeCase("keys_unknown_section", "a keys file section other than keys/admin_keys", "users:\n  x: y\n", needles=("only 'keys' and 'admin_keys'",)),
    ServeCase("keys_policy_is_list", "a key bound to a list of policies", f"keys:\n  {KEY}: [a, b]\n", needles=("single text",)),
    ServeCase("keys_not_utf8", "keys file that is not UTF-8", "keys:\n  caf\udce9: base\n", needles=("UTF-8",)),
    ServeCase("artifact_pair_without_equals", "--artifact without NAME=", args=("--artifact", "runs/a/artifact"), needles=("NAME=FOLDER",)),
    ServeCase("max_texts_too_large", "--max-texts above the hard cap", args=("--max-texts", "5000"), needles=("max_texts",)),
    ServeCase("header_timeout_zero", "--header-timeout 0", args=("--header-timeout", "0"), needles=("header timeout", "positive")),
]


@pytest.mark.parametrize("case", SERVE_CASES, ids=[c.id for c in SERVE_CASES])
def test_bad_serve_input(case: ServeCase, tmp_path, tiny_model_dir, capsys, monkeypatch):
    import uvicorn

    def never(*a, **k):  # a case that got past the checks would start serving: fail instead of blocking
        raise AssertionError("spul serve started although the input is bad")

    monkeypatch.setattr(uvicorn, "run", never)
    keys = tmp_path / "keys.yaml"
    if case.keys_yaml is not None:
        keys.write_bytes(case.keys_yaml.encode("utf-8", "surrogateescape"))
    rc, err = run_cli(["serve", "--model", str(tiny_model_dir), "--keys", str(keys), *case.args], capsys)
    assert_one_line_error(rc, err, case.needles)


def test_disk_full_while_writing_says_so(workspace, capsys, monkeypatch):
    """ENOSPC (simulated: the split writer raises it, as a full disk does) is named, with what is kept."""
    import errno

    import spul.pipeline

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(workspace["out"] / "data" / "train_forget.csv"))

    monkeypatch.setattr(spul.pipeline, "write_splits", full)
    before = snapshot(workspace["out"])
    rc, err = run_cli(["prepare", "--config", str(workspace["config"])], capsys)
    assert_one_line_error(rc, err, ("no space left", "free disk space"))
    assert_untouched(workspace["out"], before)


def test_conflicting_rows_and_train_test_overlap_are_flagged(workspace, capsys, caplog):
    """Allowed (real data sets have both) but never silent: a warning each, and counts in the manifest."""
    forget = pd.read_csv(workspace["data"] / "train_forget.csv")
    retain = pd.read_csv(workspace["data"] / "train_retain.csv")
    clash = retain.head(1).assign(label=1 - retain["label"].iloc[0])
    pd.concat([retain, clash]).to_csv(workspace["data"] / "train_retain.csv", index=False)  # same text, other label
    test_forget = pd.read_csv(workspace["data"] / "test_forget.csv")
    pd.concat([test_forget, forget.head(2)]).to_csv(workspace["data"] / "test_forget.csv", index=False)  # train rows in test
    with caplog.at_level("WARNING", logger="spul.data.splits"):
        rc, err = run_cli(["prepare", "--config", str(workspace["config"])], capsys)
    assert rc == 0, err
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "different labels" in messages and "train_retain" in messages
    assert "both train_forget and test_forget" in messages
    manifest = json.loads((workspace["out"] / "data" / "manifest.json").read_text())
    assert manifest["warnings"] == {"conflicting_labels.train_retain": 1, "train_test_overlap.forget": 2}
