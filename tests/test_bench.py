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
