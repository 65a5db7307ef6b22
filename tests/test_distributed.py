"""Data-parallel SPUL training (2 CPU processes, gloo) learns the same prompt as one process, same global batch.

One process with batch 8 and two processes with batch 4 each see the same 8 rows per step (same seeded order;
the launcher hands consecutive batches to the ranks). The prompts agree closely but not bit for bit: each rank
averages its forget and retain rows separately, so the mean of two half-batch losses is not exactly the
full-batch loss when the halves hold different numbers of forget rows.

Gradients are synchronised by stock DDP around ``LossModule`` (the loss is that module's forward); there is no
hand-written all-reduce. The DDP test below shows DDP's reducer is what averages them.
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


@pytest.mark.parametrize("engine", ["ddp", "fsdp2"])
def test_engines_around_the_loss_module_reduce_the_prompt_gradient_exactly(tmp_path, engine):
    """2 gloo processes, each a different half batch, nothing but the engine's own reduction:

    * ``ddp``: stock DDP around a ``LossModule`` leaves the mean of the two ranks' gradients on both ranks;
    * ``fsdp2``: the layout accelerate's FSDP2 builds from the shipped fsdp.yaml (one unit per decoder layer, the
      ``LossModule`` as root unit holding embeddings, LM head and the soft prompt, gathered by the loss forward).

    Either way the prompt's gradient equals one process's gradient of the mean of the two half-batch losses.
    """
    script = tmp_path / "engine.py"
    script.write_text(ENGINE_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    port = {"ddp": "29521", "fsdp2": "29522"}[engine]
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", port, str(script), str(tmp_path), engine],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grads = [torch.load(tmp_path / f"grad{r}.pt") for r in (0, 1)]
    single = torch.load(tmp_path / "single.pt")
    assert torch.equal(grads[0], grads[1]), "both ranks must end with the same gradient"
    assert torch.allclose(grads[0], single, rtol=1e-5, atol=1e-7), (grads[0] - single).abs().max()
    assert single.abs().sum() > 0


ENGINE_SCRIPT = """
import sys, torch, torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM
from spul.methods.training import LossModule
from spul.models.forward import hidden_states, lm_logits
from spul.models.soft_prompt import PromptInit, add_soft_prompt, prompt_vectors, soft_prompt_embedding

out, engine = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()
cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64)


def build():
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return model, add_soft_prompt(model, "prompt_tuning", 3, PromptInit.RANDOM, seed=0)


def loss_fn(m, batch):  # calls the embeddings, decoder, LM head and prompt encoder directly, as the SPUL losses do
    ids = batch["input_ids"]
    h = hidden_states(m, ids, torch.ones_like(ids), prompt_vectors(m, ids.shape[0], torch.float32))
    return torch.nn.functional.cross_entropy(lm_logits(m, h[:, -1]), batch["labels"]), {}


g = torch.Generator().manual_seed(1)
ids = torch.randint(0, 64, (4, 6), generator=g)
labels = torch.randint(0, 64, (4,), generator=g)
model, peft = build()
module = LossModule(peft, loss_fn)
if engine == "ddp":
    wrapped = torch.nn.parallel.DistributedDataParallel(module)
else:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (2,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    wrapped = fully_shard(module, mesh=mesh)
wrapped(input_ids=ids[2 * rank: 2 * rank + 2], labels=labels[2 * rank: 2 * rank + 2]).backward()
grad = soft_prompt_embedding(peft).weight.grad
grad = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
torch.save(grad.clone(), f"{out}/grad{rank}.pt")
dist.destroy_process_group()
if rank == 0:  # one process, unwrapped: the mean of the two half-batch losses
    model, peft = build()
    module = LossModule(peft, loss_fn)
    (0.5 * (module(input_ids=ids[:2], labels=labels[:2]) + module(input_ids=ids[2:], labels=labels[2:]))).backward()
    torch.save(soft_prompt_embedding(peft).weight.grad.clone(), f"{out}/single.pt")
"""


def _torchrun(config, cwd, port: int, **env_extra) -> None:
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), **env_extra)
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(port), "-m", "spul.interfaces.cli", "unlearn",
                           "--config", str(config)], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow  # three torchrun launches of 2 processes: ~1.5 min of CPU, up to 3 min of wall time on a busy machine
@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun is not installed")
def test_two_processes_data_parallel_and_sharded_match_one_process(tmp_path, tiny_model_dir):
    """DDP (prompt replicated, gradients averaged) and sharded frozen weights (FSDP2, requested the way
    ``accelerate launch`` with a FSDP config requests it) both learn the one-process prompt; a sharded run
    restarted from a checkpoint ends where the uninterrupted one did."""
    import json

    from spul.configuration import dump_yaml
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptInit, add_soft_prompt, soft_prompt_embedding
    from spul.pipeline import unlearn

    common = dict(finetune={"enabled": False}, unlearn={"sampling": "random", "save_steps": 1000})
    single = tiny_run_config(tmp_path / "one", tiny_model_dir, **common)
    unlearn(single)
    runs = {}
    # the sharded run also checkpoints activations: recomputing a layer in the backward must re-gather it
    # and it saves checkpoints, so that a restart from one of them can be compared with the uninterrupted run
    for name, port, env, checkpointing in (("ddp", 29517, {}, False), ("sharded", 29518, {"ACCELERATE_USE_FSDP": "true"}, True),
                                           ("resumed", 29519, {"ACCELERATE_USE_FSDP": "true"}, True)):
        cfg = tiny_run_config(tmp_path / name, tiny_model_dir, finetune={"enabled": False},
                              unlearn={"sampling": "random", "save_steps": 1000 if name == "ddp" else 4, "batch_size": 4,
                                       "gradient_checkpointing": checkpointing})
        (tmp_path / f"{name}.yaml").write_text(dump_yaml(cfg))
        if name == "resumed":  # a run that stopped after step 4 of 6
            shutil.copytree(runs["sharded"] / "unlearn" / "checkpoints" / "checkpoint-4", cfg.out / "unlearn" / "checkpoints" / "checkpoint-4")
            # with its resume key: checkpoints without one are refused rather than trusted (spul.resume)
            shutil.copy(runs["sharded"] / "unlearn" / "checkpoints" / "resume.json", cfg.out / "unlearn" / "checkpoints" / "resume.json")
        _torchrun(tmp_path / f"{name}.yaml", tmp_path, port, **env)
        runs[name] = cfg.out
    resumed = runs.pop("resumed")

    meta = {name: json.loads((out / "artifact" / "spul.json").read_text())["training"] for name, out in
            (("one", single.out), *runs.items())}
    assert meta["ddp"]["sharding"] is None
    # stock DDP wrapped the loss module (its reducer averaged the prompt's gradient); one process ran it bare
    assert meta["ddp"]["engine"] == meta["sharded"]["engine"] == "DistributedDataParallel"
    assert meta["one"]["engine"] == "LossModule"
    sharding = meta["sharded"]["sharding"]
    assert sharding["processes"] == 2 and abs(sharding["frozen_parameters_here"] - sharding["frozen_parameters"] / 2) < 0.01 * sharding["frozen_parameters"]
    assert meta["one"]["steps"] == meta["ddp"]["steps"] == meta["sharded"]["steps"] == 6  # 48 rows / global batch 8
    for name in runs:
        assert abs(meta["one"]["final_loss"] - meta[name]["final_loss"]) < 0.02 * meta["one"]["final_loss"], name

    model, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    init = soft_prompt_embedding(add_soft_prompt(model, "prompt_tuning", 4, PromptInit.VOCAB, tokenizer=tokenizer, seed=0)).weight.detach()
    one = _prompt(single.out) - init
    assert one.norm() > 0.05, "training must have moved the prompt"
    for name, out in runs.items():
        other = _prompt(out) - init
        cosine = torch.nn.functional.cosine_similarity(one.flatten(), other.flatten(), dim=0)
        assert cosine > 0.98, f"{name}: update directions differ: cosine {cosine:.4f}"
        assert (one - other).norm() < 0.15 * one.norm(), name
    # the same computation split differently: sharding changes nothing but float rounding
    assert torch.allclose(_prompt(runs["ddp"]), _prompt(runs["sharded"]), atol=1e-6)
    assert json.loads((resumed / "artifact" / "spul.json").read_text())["training"]["resumed_from"].endswith("checkpoint-4")
    assert torch.equal(_prompt(resumed), _prompt(runs["sharded"]))


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


def test_sharding_helpers_are_no_ops_on_one_process(tiny_model):
    from spul.methods.sharding import gathered, is_sharded, shard_frozen_base

    model, _ = tiny_model
    assert not is_sharded(model) and shard_frozen_base(model, torch.device("cpu")) is None
    with gathered(model):
        pass
