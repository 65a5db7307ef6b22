"""The experiment runner on the tiny model: cells, caching, resume, CSV/Markdown outputs and figures."""

from __future__ import annotations

import csv
import json

import pytest
import yaml


def _experiment_dict(tmp_path, model_dir) -> dict:
    return {
        "name": "tiny",
        "output_dir": str(tmp_path / "exp"),
        "model": {"name_or_path": str(model_dir), "dtype": "float32", "device": "cpu", "max_length": 64},
        "data": {"source": "generated:reviews", "limits": {"train_forget": 8, "train_retain": 16, "test_forget": 8, "test_retain": 16}},
        "finetune": {"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "progress_bar": False, "save_steps": 1000, "lora_r": 4},
        "evaluation": {"batch_size": 16, "progress": False, "include_vanilla": True},
        "methods": [
            {"name": "SPUL", "kind": "spul", "settings": {"prompt_encoder": "prompt_tuning", "num_epochs": 1, "batch_size": 8,
                                                          "learning_rate": 1e-2, "progress_bar": False, "save_steps": 1000},
             "grid": {"prompt_length": [2, 4]}},
            {"name": "GA", "kind": "baseline", "settings": {"method": "ga", "batch_size": 8, "lora_r": 4, "progress_bar": False},
             "grid": {"learning_rate": [1e-3]}},
            {"name": "GA+GD", "kind": "baseline", "settings": {"method": "ga_gd", "batch_size": 8, "lora_r": 4, "progress_bar": False,
                                                               "learning_rate": 1e-3}},
        ],
        "tsne": True,
    }


def test_plan_cells_and_forget_fraction():
    from spul.configuration import from_dict
    from spul.data.splits import Split
    from spul.experiments import ExperimentConfig, plan_cells
    from spul.experiments.runner import forget_subset
    from spul.data.sources import DataConfig, load_unlearning_data
    from spul.data.tasks import Task

    cfg = from_dict(ExperimentConfig, {"methods": [{"name": "SPUL", "grid": {"alpha": [0.1, 0.5], "beta": [0, 1]}}],
                                       "forget_fractions": [0.25, 1.0]})
    cells = plan_cells(cfg)
    assert len(cells) == 8 and len({c.id for c in cells}) == 8
    assert "spul-alpha=0.1-beta=0-tau=0.25" in {c.id for c in cells}
    data = load_unlearning_data(DataConfig(source="generated:reviews"), Task())
    quarter = forget_subset(data, 0.25, seed=0)
    assert len(quarter[Split.TRAIN_FORGET]) == round(len(data[Split.TRAIN_FORGET]) * 0.25)
    assert quarter[Split.TRAIN_RETAIN].equals(data[Split.TRAIN_RETAIN])
    assert forget_subset(data, 0.25, seed=0)[Split.TRAIN_FORGET].equals(quarter[Split.TRAIN_FORGET])  # seeded


def test_config_errors_are_one_line_user_errors():
    from spul.configuration import from_dict
    from spul.errors import ConfigError
    from spul.experiments import ExperimentConfig

    for bad in ({"methods": [{"name": "A", "kind": "baseline", "settings": {"method": "nope"}}]},
                {"methods": [{"name": "A", "grid": {"alpha": []}}]},
                {"methods": [{"name": "A"}, {"name": "A"}]},
                {"forget_fractions": [0]},
                {"methods": [{"name": "A", "settings": {"no_such_key": 1}}]}):
        with pytest.raises(ConfigError):
            from_dict(ExperimentConfig, bad)


def test_selection_rule():
    from spul.experiments import mark_selected

    def cell(id, method, retain, forget, kind="baseline"):
        m = {"accuracy": 0, "f1_weighted": 0, "generic_rate": 0}
        return {"id": id, "method": method, "kind": kind, "tau": 1.0, "params": {},
                "result": {"metrics": {"test_retain": {**m, "accuracy": retain}, "test_forget": {**m, "accuracy": forget}}}}

    cells = [cell("base", "Base", 0.90, 0.90, "reference"), cell("a", "GA", 0.88, 0.40), cell("b", "GA", 0.70, 0.05),
             cell("c", "RL", 0.50, 0.10), cell("d", "RL", 0.60, 0.20)]
    mark_selected(cells, max_retain_drop=5.0)
    assert [c["id"] for c in cells if c["selected"]] == ["base", "a", "d"]  # b breaks the retain floor; RL: none qualifies


def test_runner_caches_resumes_and_reports(tmp_path, tiny_model_dir):
    from spul.configuration import from_dict
    from spul.experiments import ExperimentConfig, run_experiment

    cfg = from_dict(ExperimentConfig, _experiment_dict(tmp_path, tiny_model_dir))
    first = run_experiment(cfg)
    ids = ["vanilla", "base", "spul-prompt_length=2", "spul-prompt_length=4", "ga-learning_rate=0.001", "ga_gd"]
    assert first.computed == ids and first.skipped == []
    out = first.output_dir
    for cell in first.cells:
        assert (out / "cells" / f"{cell['id']}.json").is_file()
        if cell["kind"] != "reference":
            info = cell["info"]
            assert info["trainable_parameters"] > 0 and info["seconds_per_epoch"] > 0 and info["peak_memory_mb"] > 0
    spul = {c["id"]: c for c in first.cells}["spul-prompt_length=4"]
    assert spul["info"]["trainable_parameters"] == 4 * 64

    # second run: every cell comes from the cache
    second = run_experiment(cfg)
    assert second.computed == [] and second.skipped == ids
    # resume: only the deleted cell is recomputed
    (out / "cells" / "ga-learning_rate=0.001.json").unlink()
    third = run_experiment(cfg)
    assert third.computed == ["ga-learning_rate=0.001"]

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["id"] for r in rows] == ids and {"acc_test_forget", "peak_memory_mb", "param_prompt_length"} <= set(rows[0])
    md = (out / "results.md").read_text()
    assert "## Main comparison" in md and "## Efficiency" in md and "GA+GD" in md
    results = json.loads((out / "results.json").read_text())
    assert sum(c["selected"] for c in results["cells"]) == 2 + 3  # references + one per method
    for name in ("tradeoff.png", "prompt_length.png", "tsne.png"):
        png = out / "figures" / name
        assert png.is_file() and png.stat().st_size > 10_000, name


def test_cli_experiment_uses_the_cache(tmp_path, tiny_model_dir, capsys):
    from spul.interfaces.cli import main

    spec = _experiment_dict(tmp_path, tiny_model_dir)
    spec["methods"] = spec["methods"][2:]
    spec["tsne"] = False
    spec["finetune"] = {"enabled": False}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", "--config", str(path), "evaluation.include_vanilla=false"]) == 0
    assert "2 cell(s) computed, 0 cached" in capsys.readouterr().out
    assert main(["experiment", "--config", str(path), "evaluation.include_vanilla=false"]) == 0
    assert "0 cell(s) computed, 2 cached" in capsys.readouterr().out
    assert main(["experiment", "--config", str(path), "methods=oops"]) != 0


def test_every_bundled_experiment_config_validates():
    """The shipped experiment configs are typed and validated at load: a typo there would only surface mid-run."""
    from importlib import resources

    from spul.configuration import load_config, load_yaml
    from spul.experiments import ExperimentConfig
    from spul.experiments.generation import GenerationExperimentConfig
    from spul.experiments.runner import plan_cells
    from spul.run_config_generation import is_generation_config

    folder = resources.files("spul") / "configs" / "experiments"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert len(names) >= 9
    generative = []
    for name in names:
        generation = is_generation_config(load_yaml(str(folder / name)))
        generative += [name] if generation else []
        cfg = load_config(GenerationExperimentConfig if generation else ExperimentConfig, str(folder / name), [])
        assert plan_cells(cfg), name
    assert "tofu_authors_cpu.yaml" in generative


def test_eco_is_a_row_of_the_experiment(tmp_path, tiny_model_dir):
    from spul.configuration import from_dict
    from spul.experiments import ExperimentConfig, run_experiment

    spec = _experiment_dict(tmp_path, tiny_model_dir)
    spec["methods"] = [{"name": "ECO", "kind": "eco", "settings": {"search": {"steps": 1, "max_rows": 8}},
                        "grid": {"classifier": [{"alpha": 0.2}, {"alpha": 0.4}]}}]
    spec.update(tsne=False, finetune={"enabled": False})
    spec["evaluation"]["include_vanilla"] = False
    cfg = from_dict(ExperimentConfig, spec)
    first = run_experiment(cfg)
    assert len(first.computed) == 3 and first.computed[0] == "base"
    eco = [c for c in first.cells if c["kind"] == "eco"]
    assert all(c["info"]["trainable_parameters"] == 384 + 2 and c["info"]["sigma"] > 0 for c in eco)
    assert all(set(c["result"]["metrics"]) == {"train_forget", "train_retain", "test_forget", "test_retain"} for c in eco)
    assert sum(c["selected"] for c in eco) == 1
    assert "| ECO (classifier=" in (first.output_dir / "results.md").read_text()
    assert run_experiment(cfg).computed == []  # cached


def test_shards_split_the_grid_and_a_plain_run_merges_them(tmp_path, tiny_model_dir, capsys):
    """--shard I/N: disjoint shares whose union is the whole grid; the run without --shard computes nothing and
    writes the report from the shards' cell files; a bad --shard is a one-line error."""
    from spul.experiments.runner import parse_shard, plan_cells, shard_cells
    from spul.interfaces.cli import main

    spec = _experiment_dict(tmp_path, tiny_model_dir)
    spec["methods"] = [spec["methods"][0]]  # SPUL at two prompt lengths + base (no fine-tune: no vanilla row) = 3 cells
    spec["tsne"] = False
    spec["finetune"] = {"enabled": False}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", "--config", str(path), "--shared-only"]) == 0
    done: list[list[str]] = []
    for i in range(3):
        assert main(["experiment", "--config", str(path), "--shard", f"{i}/3"]) == 0
        out = capsys.readouterr().out
        assert f"shard {i}/3:" in out and "merge them" in out
        cells = tmp_path / "exp" / "cells"
        done.append(sorted(p.stem for p in cells.glob("*.json") if not any(p.stem in d for d in done)))
    whole = ["base", "spul-prompt_length=2", "spul-prompt_length=4"]
    assert sorted(sum(done, [])) == whole and all(len(d) == 1 for d in done)
    assert len({c for d in done for c in d}) == sum(len(d) for d in done)  # disjoint
    assert not (tmp_path / "exp" / "results.md").exists()  # no partial report
    assert main(["experiment", "--config", str(path)]) == 0
    assert "0 cell(s) computed, 3 cached" in capsys.readouterr().out
    assert {r["id"] for r in csv.DictReader((tmp_path / "exp" / "results.csv").open())} == set(whole)
    # the Slurm array template passes its task id and count as the shard (every cell is cached by now)
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), SPUL_PYTHON=sys.executable, SPUL_CONFIG=str(path),
               SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="3")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm" / "spul_experiment.sbatch")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "shard 1/3: 0 cell(s) computed, 1 cached, 2 left to the other shards" in proc.stdout

    # the split itself: deterministic, disjoint, complete for any N
    from spul.configuration import from_dict
    from spul.experiments import ExperimentConfig

    planned = plan_cells(from_dict(ExperimentConfig, _experiment_dict(tmp_path, tiny_model_dir)))
    for n in (1, 2, 3, 7):
        parts = [[c.id for c in shard_cells(planned, i, n)] for i in range(n)]
        assert sorted(sum(parts, [])) == sorted(c.id for c in planned)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        assert main(["experiment", "--config", str(path), f"--shard={bad}"]) != 0
        err = capsys.readouterr().err
        assert "--shard" in err and "Traceback" not in err
