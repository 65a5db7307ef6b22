"""The generative run (task kind qa): config, loss masks, SPUL on generative examples, cached reference models,
and the TOFU-style report, on the tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spul.configuration import from_dict
from spul.errors import ConfigError


def _config(tmp_path, model_dir, **sections):
    from spul.configuration import deep_merge
    from spul.run_config_generation import GenerationRunConfig

    base = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(model_dir), "dtype": "float32", "device": "cpu", "max_length": 64},
        "task": {"kind": "qa", "chat_template": "never"},
        "data": {"source": "generated:authors", "generator": {"num_authors": 4, "questions_per_author": 3}},
        "max_answer_length": 20,
        "finetune": {"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "progress_bar": False, "save_steps": 1000,
                     "lora_r": 4, "quantization": "none"},
        "unlearn": {"prompt_encoder": "prompt_tuning", "prompt_length": 4, "num_epochs": 1, "batch_size": 8,
                    "learning_rate": 1e-2, "progress_bar": False, "save_steps": 1000},
        "evaluation": {"max_new_tokens": 6, "batch_size": 8},
    }
    if "method" in sections.get("unlearn", {}):  # another method: its own section, not SPUL's
        base["unlearn"] = {}
    return from_dict(GenerationRunConfig, deep_merge(base, sections))


def test_quickstart_generation_config_validates():
    import argparse

    from spul.interfaces.options import load_run_config
    from spul.run_config_generation import GenerationRunConfig

    cfg = load_run_config(argparse.Namespace(config="quickstart_generation", overrides=[], output_dir=None))
    assert isinstance(cfg, GenerationRunConfig)
    assert cfg.method == "spul" and cfg.task.kind.value == "qa" and cfg.data.source == "generated:authors"
    assert cfg.model.dtype.value == "float32" and "I don't know." in cfg.task.refusals
    # the label-task quickstart still reads as a RunConfig
    plain = load_run_config(argparse.Namespace(config="quickstart", overrides=[], output_dir=None))
    assert type(plain).__name__ == "RunConfig"


def test_generation_config_refuses_what_it_cannot_run(tmp_path):
    from spul.run_config_generation import GenerationRunConfig

    with pytest.raises(ConfigError, match="no generative training yet"):
        GenerationRunConfig(unlearn={"method": "deep_prompt"})
    with pytest.raises(ConfigError, match="max_answer_length"):
        _config(tmp_path, "m", max_answer_length=80)
    with pytest.raises(ConfigError, match="forget"):
        _config(tmp_path, "m", evaluation={"sets": ["retain"]})


def test_generative_examples_and_loss_masks(tiny_model):
    """Forget rows train toward a refusal, retain rows toward their answer; the collator labels exactly the answer
    tokens (EOS included) and answer_positions selects them."""
    from spul.data.generation import GenerationEncoder, build_generation_examples
    from spul.data.generative_sources import GenerationDataConfig, load_generation_data
    from spul.data.tasks import GenerationTask, GenerationTaskConfig
    from spul.methods.losses import IGNORE, answer_positions
    from spul.methods.training import AnswerCollator, AnswerDataset

    _, tok = tiny_model
    task = GenerationTask(GenerationTaskConfig(kind="qa", chat_template="never", refusals=["I don't know.", "No idea."]))
    enc = GenerationEncoder(task, tok, 64, 20)
    data = load_generation_data(GenerationDataConfig(generator={"num_authors": 4, "questions_per_author": 3}))
    examples = build_generation_examples(data, enc, forget_target="refusal", seed=0)
    forget = [e for e in examples if e.is_forget]
    retain = [e for e in examples if not e.is_forget]
    assert len(forget) == len(data["forget"]) and len(retain) == len(data["retain"])
    refusal_ids = {tuple(enc.encode_answer(q, r)) for q in data["forget"]["question"] for r in task.refusals}
    assert all(tuple(e.target_ids) in refusal_ids for e in forget)
    assert all(e.target_ids[-1] == tok.eos_token_id for e in examples)
    assert retain[0].target_ids == enc.encode_answer(data["retain"]["question"][0], data["retain"]["answer"][0])
    ds = AnswerDataset(examples[:6])
    batch = AnswerCollator(enc.pad_id)([ds[i] for i in range(len(ds))])
    assert int((batch["labels"] != IGNORE).sum()) == sum(len(e.target_ids) for e in examples[:6])
    hidden = torch.randn(batch["input_ids"].shape[0], batch["input_ids"].shape[1], 4)
    _, targets, rows = answer_positions(hidden, batch["labels"])
    for r, ex in enumerate(examples[:6]):
        assert targets[rows == r].tolist() == ex.target_ids


def test_spul_generative_training_moves_forget_answers_only_through_the_prompt(tmp_path, tiny_model_dir):
    """A few SPUL steps on generative examples: the soft prompt raises the refusal's probability on forget questions
    while the frozen weights stay bit-identical; the artifact loads back as a soft prompt through the registry."""
    from spul import pipeline_generation as pg
    from spul.data.generation import GenerationEncoder
    from spul.evaluation.generation_metrics import answer_nlls
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model

    cfg = _config(tmp_path, tiny_model_dir, unlearn={"learning_rate": 5e-2, "num_epochs": 4, "beta": 0.5},
                  task={"refusals": ["I don't know."]})
    data = pg.prepare(cfg)
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    enc: GenerationEncoder = pg.encoder_for(cfg, tok)
    questions = data["forget"]["question"].tolist()
    refusal = ["I don't know."] * len(questions)
    nll0 = float(np.mean([n.mean() for n in answer_nlls(model, enc, questions, refusal)]))
    artifact = pg.unlearn(cfg, data, str(tiny_model_dir), model_and_tokenizer=(model, tok))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    iv = load_intervention(artifact, model, tokenizer=tok)
    assert iv.vectors.shape[0] == 4
    nll1 = float(np.mean([n.mean() for n in answer_nlls(model, enc, questions, refusal, soft_prompt=iv.vectors)]))
    assert nll1 < nll0 - 0.05, (nll0, nll1)
    # same inputs: the artifact is reused, not retrained
    mtime = (artifact / "spul.json").stat().st_mtime_ns
    assert pg.unlearn(cfg, data, str(tiny_model_dir), model_and_tokenizer=(model, tok)) == artifact
    assert (artifact / "spul.json").stat().st_mtime_ns == mtime


def test_reference_models_are_cached_by_their_inputs(tmp_path, tiny_model_dir):
    from spul import pipeline_generation as pg
    from spul.io import read_json

    cfg = _config(tmp_path, tiny_model_dir)
    data = pg.prepare(cfg)
    path = pg.train_reference(cfg, data, "retain_only")
    stamp = read_json(cfg.out / "retain_only" / "done.json")
    # the retain side includes the general-knowledge rows (general_retain, on by default)
    assert stamp["examples"] == len(data["retain"]) + len(data["general"]) and stamp["with_forget"] is False
    assert len(stamp["fingerprint"]) > 8
    mtime = (cfg.out / "retain_only" / "done.json").stat().st_mtime_ns
    assert pg.train_reference(cfg, data, "retain_only") == path
    assert (cfg.out / "retain_only" / "done.json").stat().st_mtime_ns == mtime  # reused
    # the retain-only key ignores the forget set, the familiarised one does not
    other = pg.prepare(_config(tmp_path, tiny_model_dir, data={"forget_split": "forget50"}))
    assert pg.reference_inputs(cfg, data, False)["data"]["retain"] != pg.reference_inputs(cfg, other, False)["data"]["retain"]
    changed = _config(tmp_path, tiny_model_dir, finetune={"learning_rate": 2e-3})
    pg.train_reference(changed, data, "retain_only")
    assert read_json(cfg.out / "retain_only" / "done.json")["key"] != stamp["key"]  # changed inputs retrain


def test_generative_run_writes_the_tofu_table(tmp_path, tiny_model_dir):
    from spul import pipeline_generation as pg
    from spul.io import read_json

    cfg = _config(tmp_path, tiny_model_dir, finetune={"max_steps": 1}, unlearn={"max_steps": 2}, evaluation={"max_new_tokens": 3},
                  data={"generator": {"num_authors": 3, "questions_per_author": 2}})
    rows = pg.run(cfg)
    assert [r["method"] for r in rows] == ["Base (familiarized)", "Retain-only (reference)", "SPUL (p=4)"]
    for row in rows:
        for key in ("forget_quality", "ks_statistic", "model_utility", "rouge_forget", "rouge_retain"):
            assert key in row, key
        assert set(row["sets"]) == {"forget", "retain", "world_facts"}
        assert "fact_recall" in row["sets"]["forget"] and "truth_ratio" in row["sets"]["forget"]
    assert rows[1]["forget_quality"] == pytest.approx(1.0)  # the reference against itself
    report = cfg.out / "report"
    md = (report / "results.md").read_text()
    assert "Forget quality" in md and "Model utility" in md and "fact recall forget" in md
    assert len(read_json(report / "results.json")["rows"]) == 3
    assert (report / "fq_vs_utility.png").stat().st_size > 1000
    assert set(read_json(cfg.out / "timings.json")) == {"prepare", "familiarize", "retain_only", "unlearn", "evaluate"}

# the weight methods on generation (LoRA artifacts), IDK-DPO / SimNPO / RMU and ECO: tests/test_generation_methods.py
