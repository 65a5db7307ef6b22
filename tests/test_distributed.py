"""Data-parallel SPUL training (2 CPU processes, gloo) learns the same prompt as one process, same global batch.

One process with batch 8 and two processes with batch 4 each see the same 8 rows per step (same seeded order;
the launcher hands consecutive batches to the ranks). The prompts agree closely but not bit for bit: each rank
averages its forget and retain rows separately, so the mean of two half-batch losses is not exactly the
full-batch loss when the halves hold different numbers of forget rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tiny_run_config


def _prompt(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "artifact" / "adapter_model.safetensors"))["prompt_embeddings"]


def test_average_gradients_is_a_no_op_on_one_process():
    from spul.methods.distributed import average_gradients, world_size

    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(1, 3)).sum().backward()
    before = layer.weight.grad.clone()
    average_gradients(layer)
    assert world_size() == 1 and torch.equal(layer.weight.grad, before)


@pytest.mark.slow  # two torchrun processes: ~30 s of CPU, over a minute of wall time on a busy machine
@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun is not installed")
def test_two_process_ddp_matches_one_process(tmp_path, tiny_model_dir):
    from spul.configuration import dump_yaml
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptInit, add_soft_prompt, soft_prompt_embedding
    from spul.pipeline import unlearn

    common = dict(finetune={"enabled": False}, unlearn={"sampling": "random", "save_steps": 1000})
    single = tiny_run_config(tmp_path / "one", tiny_model_dir, **common)
    unlearn(single)

    ddp = tiny_run_config(tmp_path / "two", tiny_model_dir, finetune={"enabled": False},
                          unlearn={"sampling": "random", "save_steps": 1000, "batch_size": 4})
    config = tmp_path / "ddp.yaml"
    config.write_text(dump_yaml(ddp))
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "spul.interfaces.cli", "unlearn",
                           "--config", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    import json

    meta_one = json.loads((single.out / "artifact" / "spul.json").read_text())
    meta_two = json.loads((ddp.out / "artifact" / "spul.json").read_text())
    assert meta_one["training"]["steps"] == meta_two["training"]["steps"] == 6  # 48 rows / global batch 8
    assert abs(meta_one["training"]["final_loss"] - meta_two["training"]["final_loss"]) < 0.02 * meta_one["training"]["final_loss"]

    model, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    init = soft_prompt_embedding(add_soft_prompt(model, "prompt_tuning", 4, PromptInit.VOCAB, tokenizer=tokenizer, seed=0)).weight.detach()
    one, two = _prompt(single.out) - init, _prompt(ddp.out) - init
    assert one.norm() > 0.05, "training must have moved the prompt"
    cosine = torch.nn.functional.cosine_similarity(one.flatten(), two.flatten(), dim=0)
    assert cosine > 0.98, f"update directions differ: cosine {cosine:.4f}"
    assert (one - two).norm() < 0.15 * one.norm()


def test_gradient_accumulation_matches_full_batch(tmp_path, tiny_model_dir):
    """Batch 4 × 2 accumulation steps ≈ batch 8: the Trainer must divide each micro-batch loss by 2.

    Without that division (what a PEFT forward's ``**kwargs`` made the Trainer do) the logged loss doubles
    (17.2 instead of ~9) and the gradients are twice too large before clipping.
    """
    import json

    from spul.pipeline import unlearn

    runs = {}
    for name, batch, steps in (("full", 8, 1), ("accum", 4, 2)):
        cfg = tiny_run_config(tmp_path / name, tiny_model_dir, finetune={"enabled": False},
                              unlearn={"sampling": "random", "save_steps": 1000, "batch_size": batch, "gradient_accumulation_steps": steps})
        unlearn(cfg)
        runs[name] = json.loads((cfg.out / "artifact" / "spul.json").read_text())["training"]
    assert runs["full"]["steps"] == runs["accum"]["steps"] == 6
    assert abs(runs["accum"]["final_loss"] - runs["full"]["final_loss"]) < 0.1 * runs["full"]["final_loss"]
