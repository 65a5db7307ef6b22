"""Tracking: report_to / run_name / logging_dir reach the Trainer, evaluation tables join the run, phase-labelled
progress, and OUTPUT/run.log."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import tiny_run_config

from spul.errors import ConfigError
from spul.methods.config import TrainConfig

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed (spul[track])")


def test_report_to_is_checked_at_config_time():
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'"):
        TrainConfig(report_to=["tensorbord"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"spul\[track\]"):
            TrainConfig(report_to="wandb")
    assert TrainConfig().trainer_kwargs("/tmp/x", "cpu")["report_to"] == "none"


@needs_tensorboard
def test_tracking_settings_reach_the_training_arguments(tmp_path):
    from transformers import TrainingArguments

    from spul.methods.spul.config import SpulConfig

    cfg = SpulConfig(report_to="tensorboard", run_name="my-run", logging_dir=str(tmp_path / "tb"))
    args = cfg.training_arguments(str(tmp_path / "ckpt"), "cpu")
    assert args.report_to == ["tensorboard"] and args.run_name == "my-run"
    plain = TrainingArguments(**TrainConfig(report_to=["tensorboard"]).trainer_kwargs(str(tmp_path / "c2"), "cpu"))
    assert plain.report_to == ["tensorboard"]


def _scalars(folder: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values[tag] = acc.Scalars(tag)[-1].value
    return values


@needs_tensorboard
def test_a_run_logs_training_and_evaluation_to_tensorboard_and_run_log(tmp_path, tiny_model_dir, capsys):
    import yaml

    from spul.interfaces.cli import main

    cfg = tiny_run_config(tmp_path, tiny_model_dir)
    from spul.configuration import to_dict

    raw = to_dict(cfg)
    raw["finetune"].update(report_to=["tensorboard"], progress_bar=True, logging_steps=1)
    raw["unlearn"].update(report_to=["tensorboard"], progress_bar=True, logging_steps=1)
    raw["evaluation"]["progress"] = True
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", "-c", str(tmp_path / "c.yaml")]) == 0
    out = Path(raw["output_dir"])
    err = capsys.readouterr().err
    assert "\r  0%" not in err  # no unlabelled bar
    assert "familiarise:" in err and "unlearn:" in err and "evaluate test_forget" in err  # phase-labelled bars
    unlearn = _scalars(out / "tensorboard" / "unlearn")
    assert any(tag.startswith("train/loss") for tag in unlearn)
    assert any(tag.startswith("evaluate/SPUL") and tag.endswith("test_forget/accuracy") for tag in unlearn)
    assert any(tag.startswith("train/loss") for tag in _scalars(out / "tensorboard" / "familiarise"))
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "spul.train: familiarise step 1/" in log and "spul.train: unlearn step 1/" in log and "loss=" in log
    # a failing command appends its one-line error to the same log
    assert main(["evaluate", "-c", str(tmp_path / "c.yaml"), "--artifact", str(tmp_path / "nope")]) != 0
    assert "ERROR spul: spul: error: artifact folder" in (out / "run.log").read_text(encoding="utf-8")


def test_run_log_without_tracking(tmp_path, tiny_model_dir):
    import logging

    from spul.interfaces.cli import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"model: {{name_or_path: {tiny_model_dir}, dtype: float32, device: cpu, max_length: 64}}\n"
                        "data: {limits: {train_forget: 8, train_retain: 8, test_forget: 8, test_retain: 8}}\n")
    level = logging.getLogger().level
    assert main(["prepare", "-c", str(cfg_file), "-o", str(tmp_path / "o")]) == 0
    assert not (tmp_path / "o" / "run.log").exists()  # prepare writes no run log; run/finetune/unlearn/evaluate do
    assert logging.getLogger().level == level  # the command left the logging setup as it found it
