"""Typed configs from YAML and key=value overrides, and the CLI's one-line errors."""

from __future__ import annotations

import pytest

from spul.configuration import dump_yaml, load_config, parse_overrides
from spul.errors import ConfigError
from spul.methods.finetune.config import Quantization
from spul.models.soft_prompt import PromptEncoder
from spul.pipeline import RunConfig


def test_defaults_follow_the_paper():
    cfg = RunConfig()
    assert cfg.unlearn.prompt_length == 30 and cfg.unlearn.alpha == 0.5 and cfg.unlearn.beta == 0.5
    assert cfg.unlearn.prompt_encoder is PromptEncoder.P_TUNING and cfg.unlearn.encoder_hidden_size == 128
    assert cfg.finetune.lora_r == 16 and cfg.finetune.lora_alpha == 64 and cfg.finetune.target_modules == ["q_proj", "v_proj"]
    assert cfg.task.generic_labels == ["neutral", "unknown", "None"]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("unlearn:\n  alpha: 0.1\n  prompt_encoder: prompt_tuning\nfinetune:\n  quantization: none\n")
    cfg = load_config(RunConfig, path, ["unlearn.beta=1.0", "data.limits.train_retain=10", "task.label_words=[bad, good]"])
    assert cfg.unlearn.alpha == 0.1 and cfg.unlearn.beta == 1.0
    assert cfg.unlearn.prompt_encoder is PromptEncoder.PROMPT_TUNING
    assert cfg.finetune.quantization is Quantization.NONE
    assert cfg.data.limits == {"train_retain": 10}
    assert cfg.task.label_words == ["bad", "good"]
    # the dump round-trips
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(cfg))
    assert load_config(RunConfig, again).unlearn.alpha == 0.1


@pytest.mark.parametrize(
    "override, message",
    [
        ("unlearn.alpha=-1", "negative"),
        ("unlearn.learning_rate=0", "learning_rate"),
        ("unlearn.prompt_encoder=lstm", "use one of: prompt_tuning, p_tuning"),
        ("unlearn.alhpa=0.1", "unknown config key 'unlearn.alhpa'"),
        ("unlearn.batch_size=2.5", "whole number"),
        ("unlearn.batch_size=many", "must be a int"),
        ("model.max_length=4", "too small"),
        ("finetune.merge=perhaps", "true or false"),
        ("evaluation.splits=[train]", "unknown or no split"),
    ],
)
def test_invalid_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, None, [override])


def test_bad_override_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["alpha"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("unlearn: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(RunConfig, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, tmp_path / "none.yaml")


def test_cli_prints_one_line_errors_and_exits_non_zero(capsys, tmp_path):
    from spul.interfaces.cli import main

    code = main(["prepare", "-o", str(tmp_path / "o"), "data.source=./missing/folder"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("spul: error:") and "fix:" in err[0]
    code = main(["config", "unlearn.beta=-2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "unlearn.beta" in err[0]


def test_cli_prepare_and_bundled_config(capsys, tmp_path):
    from spul.interfaces.cli import main

    assert main(["config", "-c", "quickstart"]) == 0
    assert "packaged:smollm2-135m-instruct" in capsys.readouterr().out
    assert main(["prepare", "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "data" / "manifest.json").is_file()


def test_bundled_run_configs_validate():
    from importlib import resources

    from spul.configuration import load_config
    from spul.data.tasks import TaskKind
    from spul.pipeline import RunConfig

    folder = resources.files("spul") / "configs"
    kinds = {}
    for name in ("quickstart.yaml", "quickstart_mcqa.yaml"):
        cfg = load_config(RunConfig, str(folder / name), [])
        kinds[name] = cfg.task.kind
    assert kinds == {"quickstart.yaml": TaskKind.CLASSIFICATION, "quickstart_mcqa.yaml": TaskKind.MULTIPLE_CHOICE}
