"""Generative experiments and passages on the tiny random Llama: the experiment runner's cells, cache, resume, shards
and TOFU-style table; passages (task kind completion) through the generative pipeline with the MUSE-style metrics;
the general-knowledge retain rows."""

from __future__ import annotations

import pytest
import yaml

from spul.errors import ConfigError

FAST = {"progress_bar": False, "save_steps": 1000, "max_steps": 1}


def _experiment_values(tmp_path, model_dir, **extra):
    values = {
        "name": "tiny_tofu",
        "output_dir": str(tmp_path / "exp"),
        "model": {"name_or_path": str(model_dir), "dtype": "float32", "device": "cpu", "max_length": 64},
        "task": {"kind": "qa", "chat_template": "never"},
        "data": {"source": "generated:authors", "generator": {"num_authors": 4, "questions_per_author": 2, "num_general": 3}},
        "max_answer_length": 16,
        "finetune": {"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "lora_r": 4, "quantization": "none", **FAST},
        "evaluation": {"max_new_tokens": 3, "batch_size": 8},
        "methods": [
            {"name": "SPUL", "kind": "spul", "settings": {"prompt_length": 4, "batch_size": 8, "learning_rate": 1e-2, **FAST}},
            {"name": "GA+GD", "kind": "ga_gd", "settings": {"batch_size": 8, "lora_r": 4, **FAST}, "grid": {"learning_rate": [1e-4, 1e-3]}},
        ],
    }
    values.update(extra)
    return values


def test_generation_experiment_table_cache_resume_and_shards(tmp_path, tiny_model_dir, capsys):
    from spul.interfaces.cli import main
    from spul.io import read_json

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_experiment_values(tmp_path, tiny_model_dir)))
    assert main(["experiment", "-c", str(path)]) == 0  # task.kind qa: the generative runner
    out = tmp_path / "exp"
    results = read_json(out / "results.json")
    rows = results["rows"]
    assert [r["id"] for r in rows] == ["base", "retain_only", "spul", "ga_gd-learning_rate=0.0001", "ga_gd-learning_rate=0.001"]
    for row in rows:
        for key in ("forget_quality", "model_utility", "rouge_forget", "rouge_retain"):
            assert 0.0 <= row[key] <= 1.0, (row["id"], key)
    assert rows[1]["forget_quality"] == pytest.approx(1.0)  # the reference against itself
    assert sum(r["selected"] for r in rows if r["kind"] == "ga_gd") == 1 and rows[2]["selected"]
    md = (out / "results.md").read_text()
    assert "Forget quality" in md and "GA+GD (learning_rate=0.001)" in md and "Selected per method" in md
    assert (out / "fq_vs_utility.png").stat().st_size > 1000
    assert len((out / "results.csv").read_text().splitlines()) == 6
    assert "3 cell(s) computed, 0 cached" in capsys.readouterr().out

    # same config: every cell is read back; a changed setting recomputes only that method's cells
    from spul.configuration import from_dict
    from spul.experiments.generation import GenerationExperimentConfig, run_generation_experiment

    again = run_generation_experiment(from_dict(GenerationExperimentConfig, _experiment_values(tmp_path, tiny_model_dir)))
    assert again.computed == [] and len(again.skipped) == 3
    changed = _experiment_values(tmp_path, tiny_model_dir)
    changed["methods"][1]["settings"]["retain_weight"] = 0.5
    outcome = run_generation_experiment(from_dict(GenerationExperimentConfig, changed))
    assert sorted(outcome.computed) == ["ga_gd-learning_rate=0.0001", "ga_gd-learning_rate=0.001"] and outcome.skipped == ["spul"]

    # shards compute disjoint shares and write no report; the run without a shard merges (all cached)
    sharded = _experiment_values(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "sharded"))
    cfg = from_dict(GenerationExperimentConfig, sharded)
    first = run_generation_experiment(cfg, shard=(0, 2))
    second = run_generation_experiment(cfg, shard=(1, 2))
    assert sorted(first.computed + second.computed) == sorted(["spul", "ga_gd-learning_rate=0.0001", "ga_gd-learning_rate=0.001"])
    assert not set(first.computed) & set(second.computed) and not (tmp_path / "sharded" / "results.md").exists()
    merged = run_generation_experiment(cfg)
    assert merged.computed == [] and (tmp_path / "sharded" / "results.md").is_file()


def test_generation_experiment_refuses_methods_without_generative_training(tmp_path):
    from spul.configuration import from_dict
    from spul.experiments.generation import GenerationExperimentConfig
    from spul.methods.registry import method_names
    from spul.run_config_generation import GENERATIVE_METHODS

    missing = [m for m in method_names() if m not in GENERATIVE_METHODS]
    if not missing:
        pytest.skip("every registered method has generative training")
    values = _experiment_values(tmp_path, "m", methods=[{"name": "X", "kind": missing[0]}])
    with pytest.raises(ConfigError, match=r"methods\[X\].*no generative training"):
        from_dict(GenerationExperimentConfig, values)


def test_general_rows_train_the_retain_side(tmp_path, tiny_model_dir):
    """generated:authors' general set joins the fine-tunes' retain rows with its answers and the unlearning retain rows
    with the familiarised model's own (greedy) answers; general_retain=false leaves both out."""
    from spul import pipeline_generation as pg
    from spul.configuration import from_dict
    from spul.models.loading import ModelConfig, load_model
    from spul.run_config_generation import GenerationRunConfig

    values = {"output_dir": str(tmp_path / "run"), "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu",
                                                              "max_length": 64},
              "task": {"kind": "qa", "chat_template": "never"}, "max_answer_length": 8,
              "data": {"generator": {"num_authors": 3, "questions_per_author": 2, "num_general": 4}}}
    cfg = from_dict(GenerationRunConfig, values)
    data = pg.prepare(cfg)
    train = pg.training_view(cfg, data)
    assert len(train["retain"]) == len(data["retain"]) + 4
    assert set(data["general"]["question"]) <= set(train["retain"]["question"])
    assert not set(data["general"]["question"]) & set(data["world_facts"]["question"])  # world facts stay unseen
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    view = pg.unlearning_view(cfg, data, model, tok)
    own = view["retain"].tail(4)["answer"].tolist()
    assert len(list((cfg.out / "cache").glob("own-answers-*.json"))) == 1  # cached by the model's identity
    enc = pg.encoder_for(cfg, tok)
    from spul.models.generation import DecodingConfig, generate_ids

    ids = generate_ids(model, [enc.encode_prompt(q) for q in data["general"]["question"]], pad_id=enc.pad_id, eos_id=tok.eos_token_id,
                       decoding=DecodingConfig(max_new_tokens=7))
    assert own == [enc.decode(r) or a for r, a in zip(ids, data["general"]["answer"])]
    from spul.data.generated_text import GENERAL_FACTS, generate_authors
    from spul.errors import DataError

    with pytest.raises(DataError, match="num_general"):
        generate_authors(num_general=len(GENERAL_FACTS) + 1)
    assert "general" not in generate_authors(num_authors=3, num_general=0)
    off = from_dict(GenerationRunConfig, {**values, "general_retain": False})
    assert len(pg.training_view(off, data)["retain"]) == len(data["retain"])
    assert len(pg.unlearning_view(off, data, model, tok)["retain"]) == len(data["retain"])


@pytest.mark.parametrize("method", ["spul", "ga_gd"])
def test_passages_run_end_to_end(tmp_path, tiny_model_dir, method):
    """generated:passages through the generative pipeline: familiarise on the passages, a retain-only reference,
    unlearn, and the MUSE-style report (VerbMem, KnowMem, Min-K%++ AUC, PrivLeak, fluency)."""
    from spul import pipeline_generation as pg
    from spul.configuration import from_dict
    from spul.io import read_json
    from spul.run_config_generation import GenerationRunConfig

    unlearn = ({"prompt_length": 4, "batch_size": 8, "learning_rate": 1e-2, **FAST, "max_steps": 2} if method == "spul" else
               {"method": method, "batch_size": 8, "lora_r": 4, "learning_rate": 1e-3, **FAST})
    cfg = from_dict(GenerationRunConfig, {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu", "max_length": 96},
        "task": {"kind": "completion"},
        "data": {"source": "generated:passages", "generator": {"num_passages": 6, "num_forget": 2, "num_holdout": 2}},
        "max_answer_length": 16,
        "finetune": {"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "lora_r": 4, "quantization": "none", **FAST},
        "unlearn": unlearn,
        "evaluation": {"max_new_tokens": 4, "batch_size": 8},
    })
    rows = pg.run(cfg)
    assert [r["method"] for r in rows][:2] == ["Base (familiarized)", "Retain-only (reference)"] and len(rows) == 3
    for row in rows:
        for key in ("verbmem_forget", "knowmem_forget", "knowmem_retain", "auc", "priv_leak", "unique_token_ratio", "output_perplexity"):
            assert key in row, (row["method"], key)
        # the random model's continuations may all be empty (unknown words): then there is no perplexity to take
        assert 0 <= row["verbmem_forget"] <= 1 and 0 <= row["auc"] <= 1 and not row["output_perplexity"] <= 0
    assert rows[1]["priv_leak"] == pytest.approx(0.0)  # the reference against itself
    md = (cfg.out / "report" / "results.md").read_text()
    assert "VerbMem forget" in md and "PrivLeak" in md
    assert len(read_json(cfg.out / "report" / "results.json")["rows"]) == 3
    stamp = read_json(cfg.out / "familiarized" / "done.json")
    assert stamp["examples"] >= 4  # forget + retain passages (LM windows)


def test_spul_passage_examples_refuse_forget_openings(tiny_model):
    """SPUL on passages: openings of forget passages and forget-knowledge questions → a refusal (forget rows); retain
    passages and retain-knowledge questions → themselves."""
    from spul import pipeline_generation as pg
    from spul.configuration import from_dict
    from spul.data.generative_sources import GenerationDataConfig, load_generation_data
    from spul.run_config_generation import GenerationRunConfig

    _, tok = tiny_model
    cfg = from_dict(GenerationRunConfig, {"model": {"max_length": 96}, "max_answer_length": 16,
                                          "task": {"kind": "completion", "refusals": ["I don't know."]}})
    data = load_generation_data(GenerationDataConfig(source="generated:passages", generator={"num_passages": 5, "num_forget": 1, "num_holdout": 1}))
    examples = pg.training_examples(cfg, data, pg.encoder_for(cfg, tok), "refusal", seed=0)
    forget = [e for e in examples if e.is_forget]
    enc, qa = pg.encoder_for(cfg, tok), pg.qa_encoder_for(cfg, tok)
    qa_refusal = qa.encode_answer(data["knowmem_forget"]["question"][0], "I don't know.")
    # a refusal's first token may merge with the prompt's end; every forget target ends like the refusal
    tail = qa_refusal[-3:]
    assert forget and all(e.target_ids[-3:] == tail and len(e.target_ids) <= len(qa_refusal) + 1 for e in forget)
    assert sum(e.target_ids == qa_refusal for e in forget) >= len(data["knowmem_forget"])
    openings = [e for e in forget if e.target_ids != qa_refusal]
    assert len(openings) >= len(data["verbmem_forget"]) and enc.task.kind.value == "completion"
    retain = [e for e in examples if not e.is_forget]
    assert len(retain) >= len(data["retain"]) + len(data["knowmem_retain"])


def test_passages_experiment_table(tmp_path, tiny_model_dir):
    """The experiment runner on passage data: MUSE-style rows (VerbMem, KnowMem, PrivLeak) and one selected cell per method."""
    from spul.configuration import from_dict
    from spul.experiments.generation import GenerationExperimentConfig, run_generation_experiment
    from spul.io import read_json

    values = _experiment_values(tmp_path, tiny_model_dir, task={"kind": "completion"}, max_answer_length=12,
                                data={"source": "generated:passages", "generator": {"num_passages": 5, "num_forget": 1, "num_holdout": 1}})
    values["model"]["max_length"] = 96
    values["methods"][1]["grid"] = {"learning_rate": [1e-3]}
    outcome = run_generation_experiment(from_dict(GenerationExperimentConfig, values))
    assert sorted(outcome.computed) == ["ga_gd-learning_rate=0.001", "spul"]
    rows = read_json(tmp_path / "exp" / "results.json")["rows"]
    assert [r["id"] for r in rows] == ["base", "retain_only", "spul", "ga_gd-learning_rate=0.001"]
    assert all("verbmem_forget" in r and "priv_leak" in r and "knowmem_retain" in r for r in rows)
    assert rows[1]["priv_leak"] == 0.0 and all(r["selected"] for r in rows)
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "VerbMem forget" in md and "Selected per method" in md and "lowest verbmem_forget" in md


def test_generation_experiment_eco_cell_searches_toward_the_shared_retain_only_model(tmp_path, tiny_model_dir):
    """An ECO cell of a generative experiment aims its σ search at the experiment's shared retain-only model (the
    cell's own folder has none), and its row is evaluated through the gated corruption."""
    from spul.configuration import from_dict
    from spul.experiments.generation import GenerationExperimentConfig, run_generation_experiment
    from spul.io import read_json

    values = _experiment_values(tmp_path, tiny_model_dir, methods=[
        {"name": "ECO", "kind": "eco", "settings": {"search": {"steps": 1}}}])
    outcome = run_generation_experiment(from_dict(GenerationExperimentConfig, values))
    assert outcome.computed == ["eco"]
    out = tmp_path / "exp"
    meta = read_json(out / "work" / "eco" / "artifact" / "spul.json")
    shared = read_json(out / "shared" / "retain_only" / "done.json")
    assert meta["search"]["log"] and meta["search"]["retain_only_value"] is not None
    rows = {r["id"]: r for r in read_json(out / "results.json")["rows"]}
    assert set(rows) == {"base", "retain_only", "eco"} and 0.0 <= rows["eco"]["forget_quality"] <= 1.0
    assert shared["key"]  # the reference the search used is the experiment's own, stamped once
