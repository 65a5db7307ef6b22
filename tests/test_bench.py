"""``spul bench`` runs every variant on a tiny random model and reports the fields the docs promise."""

from __future__ import annotations

import json


def test_bench_tiny_random_model_json(tmp_path):
    from spul.interfaces.cli import main

    out = tmp_path / "bench.json"
    code = main(["bench", "--model", "random:tiny", "--data", "synthetic", "--seq-len", "16", "--batch-size", "4",
                 "--prompt-length", "3", "--steps", "1", "--warmup", "0", "--train", "optimised,optimised_ckpt,naive",
                 "--infer-batch-size", "4", "--infer-reps", "1", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["training"]] == ["optimised", "optimised_ckpt", "naive"]
    assert [r["variant"] for r in result["inference"]] == ["base", "prompt", "prefix_cache"]
    for row in result["training"]:
        assert row["examples_per_s"] > 0 and 0 < row["mfu"] and row["tokens_per_example"] > 3
    # the same loss on the same batch: the naive baseline computes the same objective
    losses = {r["variant"]: r["losses"][0] for r in result["training"]}
    assert abs(losses["naive"] - losses["optimised"]) < 1e-3 * abs(losses["optimised"])
    assert abs(losses["optimised_ckpt"] - losses["optimised"]) < 1e-4 * abs(losses["optimised"])
    assert result["non_embedding_params"] > 0 and result["device"]["peak_tflops"] > 0
    # the optimised step runs the prompt once per batch (shared keys/values); checkpointing and naive once per row
    tokens = {r["variant"]: r["tokens_per_example"] for r in result["training"]}
    assert tokens["naive"] == tokens["optimised_ckpt"] and abs(tokens["naive"] - tokens["optimised"] - 3 * 3 / 4) < 0.11
    mfu_target = result["targets"][0]
    assert mfu_target["met"] is None  # not measurable on a CPU / small model


def test_random_architectures_have_the_named_shapes():
    import torch

    from spul.bench.models import RANDOM_ARCHS, non_embedding_params, random_model

    assert RANDOM_ARCHS["llama-7b"]["hidden_size"] == 4096 and RANDOM_ARCHS["llama-7b"]["num_hidden_layers"] == 32
    model = random_model("tiny", torch.device("cpu"), torch.float32)
    assert not any(p.requires_grad for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    assert non_embedding_params(model) == sum(p.numel() for p in model.parameters()) - embed  # tied head


def test_phase_bench_trains_every_variant_for_the_same_steps(tmp_path, tiny_model_dir):
    """``spul bench --phase``: the whole SPUL phase of a config, real trainer vs naive loop, one JSON."""
    from conftest import tiny_run_config

    from spul.configuration import dump_yaml, to_dict
    from spul.interfaces.cli import main

    cfg = tiny_run_config(tmp_path, tiny_model_dir)
    config = tmp_path / "run.yaml"
    config.write_text(dump_yaml(to_dict(cfg)))
    out = tmp_path / "phase.json"
    code = main(["bench", "--phase", str(config), "--phase-epochs", "2", "--phase-variants", "optimised,optimised_plain,naive",
                 "--set", "unlearn.batch_size=16", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    phases = {r["variant"]: r for r in result["phases"]}
    assert list(phases) == ["optimised", "optimised_plain", "naive"]
    assert result["rows"] == 48 and {r["steps"] for r in phases.values()} == {6}  # 48 rows / 16 × 2 epochs
    assert all(r["seconds"] > 0 and r["final_loss"] == r["final_loss"] for r in phases.values())
    assert result["unlearn"]["batch_size"] == 16 and result["target"]["threshold"] == 3.0
    assert result["speedup_vs_naive"] > 0 and result["speedup_from_shortcuts"] > 0
    ceiling = result["matmul_ceiling"]
    assert 1 < ceiling["first_epoch"] < ceiling["phase"] < ceiling["later_epochs"]


def test_matmul_ceiling_of_the_quickstart_shape():
    from spul.bench.phase import matmul_ceiling

    # SmolLM2-135M on the quickstart data: the numbers docs/speed.md quotes
    c = matmul_ceiling(106_205_568, 28_311_552, 26.8, 10, 8, 2 / 3, 6)
    expected = {"first_epoch": 1.72, "later_epochs": 2.27, "phase": 2.15}
    assert all(abs(c[k] - v) < 0.01 for k, v in expected.items()), c
    assert matmul_ceiling(100, 0, 10.0, 0, 1, 0.0, 1)["phase"] == 1.5  # no head, no prompt: (2T + T) / 2T
