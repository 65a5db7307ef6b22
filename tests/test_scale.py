"""Scale-out plumbing: the loss as a module's forward, shipped accelerate configs, quantised frozen bases.

What needs hardware skips cleanly here: the bitsandbytes path (CUDA), DeepSpeed on a GPU (CUDA + deepspeed) and
the 2-GPU FSDP/DDP agreement (two GPUs). ``benchmarks/run_gpu.sh`` runs those tests on a GPU machine. DeepSpeed
ZeRO-2/3 on 2 CPU processes runs where deepspeed imports (CI does not install it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tiny_run_config

CUDA = torch.cuda.is_available()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---- the loss as a module's forward --------------------------------------------------------------------------

def test_loss_module_forward_is_the_trainer_loss_and_reads_through_to_the_model(tiny_model, tmp_path):
    from spul.methods.spul.config import SpulConfig
    from spul.methods.spul.trainer import SpulTrainer
    from spul.methods.training import AnswerCollator, LossModule, loss_module_of
    from spul.models.soft_prompt import PromptInit, add_soft_prompt

    model, tok = tiny_model
    peft = add_soft_prompt(model, "prompt_tuning", 3, PromptInit.VOCAB, tokenizer=tok, seed=0)
    try:
        args = SpulConfig(batch_size=2, progress_bar=False).training_arguments(str(tmp_path / "ck"), "cpu")
        trainer = SpulTrainer(model=peft, args=args, data_collator=AnswerCollator(tok.pad_token_id))
        module = loss_module_of(trainer.model)
        assert isinstance(trainer.model, LossModule) and trainer.peft_model is peft and module.model is peft
        # attributes the Trainer and older code read come from the PEFT model
        assert module.get_input_embeddings() is peft.get_input_embeddings() and module.config is peft.config
        assert [n for n, p in module.named_parameters() if p.requires_grad] == \
            [f"model.{n}" for n, p in peft.named_parameters() if p.requires_grad]
        batch = AnswerCollator(tok.pad_token_id)([
            {"input_ids": [5, 6, 7], "target_ids": [9], "label": 1, "is_forget": True, "row_id": 0},
            {"input_ids": [5, 8], "target_ids": [10], "label": 0, "is_forget": False, "row_id": 1}])
        via_module = trainer.compute_loss(trainer.model, batch)
        trainer._reference_hidden.clear()
        direct, _ = trainer.batch_loss(peft, batch)
        assert torch.equal(via_module, direct) and torch.equal(trainer.compute_loss(peft, batch), direct)
    finally:
        from spul.methods.spul.method import _forget_wrapper

        _forget_wrapper(model)


def test_own_sharding_only_where_accelerate_will_not_shard(monkeypatch):
    from spul.methods.sharding import accelerate_shards, sharding_requested

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert accelerate_shards("cuda") and not sharding_requested(False, "cuda")  # accelerate honours fsdp_config
    assert not accelerate_shards("cpu") and sharding_requested(False, "cpu")  # accelerate declines FSDP on CPU
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert sharding_requested(True, "cuda") and not sharding_requested(False, "cuda")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not sharding_requested(True, "cpu") and not accelerate_shards("cuda")


# ---- accelerate configs shipped in the package -----------------------------------------------------------------

def test_accelerate_configs_ship_in_the_package_and_load(capsys):
    from accelerate.commands.config.config_args import load_config_from_file

    from spul.interfaces.cli import main
    from spul.interfaces.commands.accelerate_config import accelerate_config_path, shipped_configs

    names = set(shipped_configs())
    assert names == {"ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"}
    kinds = {name: str(load_config_from_file(str(accelerate_config_path(name))).distributed_type) for name in names}
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "fsdp": "DistributedType.FSDP",
                     "deepspeed_zero2": "DistributedType.DEEPSPEED", "deepspeed_zero3": "DistributedType.DEEPSPEED"}
    fsdp = load_config_from_file(str(accelerate_config_path("fsdp"))).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert '"configs/accelerate/*.yaml"' in (REPO / "pyproject.toml").read_text()  # package data
    assert main(["accelerate-config", "fsdp"]) == 0
    assert capsys.readouterr().out.strip() == str(accelerate_config_path("fsdp"))
    assert main(["accelerate-config", "fsdp.yaml", "--show"]) == 0 and "fsdp_config:" in capsys.readouterr().out
    assert main(["accelerate-config", "zero9"]) != 0
    err = capsys.readouterr().err
    assert "zero9" in err and "ddp" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---- quantised frozen bases --------------------------------------------------------------------------------

def test_quantization_is_validated_and_refused_off_cuda(tmp_path, tiny_model_dir, capsys):
    from spul.errors import ConfigError
    from spul.interfaces.cli import main
    from spul.models.loading import ModelConfig, load_model

    with pytest.raises(ConfigError, match="quantization"):
        ModelConfig(name_or_path=str(tiny_model_dir), quantization="3bit")
    for bits in ("4bit", "8bit"):
        with pytest.raises(ConfigError, match="CUDA") as err:
            load_model(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", quantization=bits))
        assert "model.quantization=none" in err.value.fix
    # through the CLI: one line, nothing trained
    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False})
    from spul.configuration import dump_yaml

    (tmp_path / "run.yaml").write_text(dump_yaml(cfg))
    assert main(["unlearn", "--config", str(tmp_path / "run.yaml"), "model.quantization=4bit"]) != 0
    err = capsys.readouterr().err
    assert "CUDA" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (cfg.out / "artifact").exists()


@pytest.mark.skipif(not (CUDA and _has("bitsandbytes")), reason="needs a CUDA GPU and bitsandbytes (pip install spul[qlora])")
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_spul_and_eco_over_a_quantized_frozen_base_on_cuda(tmp_path, tiny_model_dir, bits):
    """SPUL trains a prompt over a 4/8-bit frozen base (prompt moves, stays finite, base weights untouched); the
    artifact applies to the quantised model; ECO's embedding corruption runs over it."""
    from safetensors.torch import load_file

    from spul.interventions.corruption import Corruption, EmbeddingGuard
    from spul.methods.eco import CorruptionConfig
    from spul.methods.spul.method import artifact_vectors
    from spul.models.forward import hidden_states, lm_logits
    from spul.models.loading import ModelConfig, load_model, weights_fingerprint
    from spul.pipeline import unlearn

    model_cfg = {"name_or_path": str(tiny_model_dir), "dtype": "bfloat16", "device": "cuda", "max_length": 64, "quantization": bits}
    cfg = tiny_run_config(tmp_path, tiny_model_dir, model=model_cfg, finetune={"enabled": False})
    unlearn(cfg)
    meta = json.loads((cfg.out / "artifact" / "spul.json").read_text())
    prompt = load_file(str(cfg.out / "artifact" / "adapter_model.safetensors"))["prompt_embeddings"]
    assert torch.isfinite(prompt).all() and meta["training"]["steps"] > 0
    model, tok = load_model(ModelConfig(**model_cfg))
    assert meta["base_fingerprint"] == weights_fingerprint(model)  # the quantised base was not changed
    vectors = artifact_vectors(model, cfg.out / "artifact")
    assert vectors.dtype == model.get_input_embeddings().weight.dtype == torch.bfloat16  # the prompt runs in bf16
    ids = torch.tensor([[5, 6, 7, 8]], device="cuda")
    mask = torch.ones_like(ids)
    with torch.no_grad():
        clean = lm_logits(model, hidden_states(model, ids, mask)[:, -1])
        prompted = lm_logits(model, hidden_states(model, ids, mask, vectors.unsqueeze(0))[:, -1])
        # ECO over the same quantised base: the corruption hook sits on the (unquantised) input embeddings
        guard = EmbeddingGuard(Corruption(CorruptionConfig(sigma=5.0)), pad_token_id=tok.pad_token_id)
        with guard.attached(model):
            guard.set_batch([True])
            corrupted = lm_logits(model, hidden_states(model, ids, mask)[:, -1])
    assert torch.isfinite(prompted).all() and torch.isfinite(corrupted).all()
    assert not torch.equal(clean, prompted) and not torch.equal(clean, corrupted) and guard.calls == 1


# ---- engines that need GPUs ------------------------------------------------------------------------------

def _accelerate_launch(config_name: str, processes: int, run_yaml, cwd, timeout: int = 600, extra: tuple[str, ...] = ()) -> None:
    from spul.interfaces.commands.accelerate_config import accelerate_config_path

    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([accelerate, "launch", "--config_file", str(accelerate_config_path(config_name)), "--num_processes",
                           str(processes), "--main_process_port", "29531", *extra, "-m", "spul.interfaces.cli", "unlearn", "--config", str(run_yaml)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _gpu_run(tmp_path, tiny_model_dir, name: str, batch: int):
    from spul.configuration import dump_yaml

    cfg = tiny_run_config(tmp_path / name, tiny_model_dir, model={"device": "cuda", "dtype": "float32"}, finetune={"enabled": False},
                          unlearn={"sampling": "random", "save_steps": 1000, "batch_size": batch, "precision": "fp32"})
    (tmp_path / f"{name}.yaml").write_text(dump_yaml(cfg))
    return cfg


def _prompt_update(out, init):
    from safetensors.torch import load_file

    return load_file(str(out / "artifact" / "adapter_model.safetensors"))["prompt_embeddings"].float() - init


@pytest.mark.skipif(not (CUDA and torch.cuda.device_count() >= 2), reason="needs two CUDA GPUs")
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_gpus_agree_with_one(tmp_path, tiny_model_dir, engine):
    """accelerate launch with the shipped ddp / fsdp config on 2 GPUs learns the one-GPU prompt (same global batch)."""
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptInit, add_soft_prompt, soft_prompt_embedding
    from spul.pipeline import unlearn

    one = _gpu_run(tmp_path, tiny_model_dir, "one", 8)
    unlearn(one)
    two = _gpu_run(tmp_path, tiny_model_dir, engine, 4)
    _accelerate_launch(engine, 2, tmp_path / f"{engine}.yaml", tmp_path)
    meta = json.loads((two.out / "artifact" / "spul.json").read_text())["training"]
    assert meta["engine"] == ("FSDP" if engine == "fsdp" else "DistributedDataParallel") and meta["steps"] == 6
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    init = soft_prompt_embedding(add_soft_prompt(model, "prompt_tuning", 4, PromptInit.VOCAB, tokenizer=tok, seed=0)).weight.detach()
    a, b = _prompt_update(one.out, init), _prompt_update(two.out, init)
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98


@pytest.mark.skipif(not (CUDA and _has("deepspeed")), reason="needs a CUDA GPU and deepspeed (the CPU run is the test below)")
@pytest.mark.parametrize("stage", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_launch_trains_the_prompt(tmp_path, tiny_model_dir, stage):
    cfg = _gpu_run(tmp_path, tiny_model_dir, stage, 8)
    _accelerate_launch(stage, 1, tmp_path / f"{stage}.yaml", tmp_path)
    meta = json.loads((cfg.out / "artifact" / "spul.json").read_text())["training"]
    assert meta["engine"] == "DeepSpeedEngine" and meta["steps"] == 6 and meta["final_loss"] > 0


def _deepspeed_imports() -> bool:
    if not _has("deepspeed"):
        return False
    return subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, timeout=300).returncode == 0


@pytest.mark.slow  # ~50 s per stage on 2 CPU cores; the first run on a machine also compiles DeepSpeed's shm op (~4 min)
@pytest.mark.skipif(CUDA or not _deepspeed_imports(), reason="needs deepspeed (not installed in CI); on CUDA the GPU test runs")
@pytest.mark.parametrize("stage", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_on_two_cpu_processes_learns_the_one_process_prompt(tmp_path, tiny_model_dir, stage):
    """accelerate launch with the shipped ZeRO-2/3 config (fp32: ``--mixed_precision no``) on 2 CPU processes:
    DeepSpeed's CPU accelerator, its engine around the LossModule, the prompt of one process (same global batch)."""
    from spul.configuration import dump_yaml
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import PromptInit, add_soft_prompt, soft_prompt_embedding
    from spul.pipeline import unlearn

    common = dict(finetune={"enabled": False})
    one = tiny_run_config(tmp_path / "one", tiny_model_dir, **common, unlearn={"sampling": "random", "save_steps": 1000})
    unlearn(one)
    two = tiny_run_config(tmp_path / stage, tiny_model_dir, **common, unlearn={"sampling": "random", "save_steps": 1000, "batch_size": 4})
    (tmp_path / f"{stage}.yaml").write_text(dump_yaml(two))
    _accelerate_launch(stage, 2, tmp_path / f"{stage}.yaml", tmp_path, timeout=900, extra=("--mixed_precision", "no"))
    meta = json.loads((two.out / "artifact" / "spul.json").read_text())["training"]
    assert meta["engine"] == "DeepSpeedEngine" and meta["steps"] == 6
    assert abs(meta["final_loss"] - json.loads((one.out / "artifact" / "spul.json").read_text())["training"]["final_loss"]) < 0.02 * meta["final_loss"]
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    init = soft_prompt_embedding(add_soft_prompt(model, "prompt_tuning", 4, PromptInit.VOCAB, tokenizer=tok, seed=0)).weight.detach()
    a, b = _prompt_update(one.out, init), _prompt_update(two.out, init)
    assert a.norm() > 0.05, "training must have moved the prompt"
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98
    assert (a - b).norm() < 0.15 * a.norm()
