"""Data safety: checkpoints without pickle, atomic checkpoint folders, resume after kill -9, damaged caches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_run_config

STEPS = 24


def _cfg(tmp_path, tiny_model_dir, name, save_steps=10, encoder="prompt_tuning"):
    # save_steps changes nothing in the maths; the reference run skips checkpoints to save time
    return tiny_run_config(tmp_path / name, tiny_model_dir, finetune={"enabled": False},
                           unlearn={"max_steps": STEPS, "save_steps": save_steps, "save_total_limit": 2, "logging_steps": 1000,
                                    "prompt_encoder": encoder, "encoder_hidden_size": 16})


def _prompt(artifact: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return next(iter(load_file(str(artifact / "adapter_model.safetensors")).values()))


def test_state_codec_round_trips_optimizer_and_rng():
    from spul.methods import safe_checkpoint as sc

    p = torch.nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.AdamW([p], lr=1e-2)
    p.grad = torch.randn(3, 4)
    opt.step()
    tree, tensors = sc.encode_state(opt.state_dict())
    json.dumps(tree)  # everything that is not a tensor is plain JSON
    back = sc.decode_state(tree, tensors)
    assert torch.equal(back["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    state = sc.rng_state()
    tree, tensors = sc.encode_state(state)
    json.dumps(tree)
    a = (np.random.rand(), torch.rand(1).item(), __import__("random").random())
    sc.set_rng_state(sc.decode_state(tree, tensors))
    assert (np.random.rand(), torch.rand(1).item(), __import__("random").random()) == a


@pytest.mark.parametrize("encoder", ["prompt_tuning", "p_tuning"])
def test_kill_minus_9_then_resume_gives_the_uninterrupted_prompt(tmp_path, tiny_model_dir, encoder):
    """P-tuning (the default encoder) trains an MLP: its weights, not only its output, must survive the kill."""
    from spul.configuration import dump_yaml
    from spul.pipeline import unlearn

    reference = _prompt(unlearn(_cfg(tmp_path, tiny_model_dir, "straight", save_steps=1000, encoder=encoder)))

    cfg = _cfg(tmp_path, tiny_model_dir, "killed", encoder=encoder)
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(dump_yaml(cfg))
    ckpts = cfg.out / "unlearn" / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "spul.interfaces.cli", "unlearn", "--config", str(config_file)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300  # a busy 2-core machine takes long to import torch in the child
    while time.time() < deadline and proc.poll() is None and not (ckpts.is_dir() and any(ckpts.glob("checkpoint-*"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (cfg.out / "artifact").exists(), "the run finished before it could be killed"
    done = sorted(ckpts.glob("checkpoint-*"))
    assert done
    for ckpt in done:  # every visible checkpoint is complete and pickle-free
        names = {p.name for p in ckpt.iterdir()}
        assert {"optimizer.json", "optimizer.safetensors", "scheduler.json", "rng_state.json", "trainer_state.json",
                "adapter_model.safetensors", "training_args.json", "trainable_state.safetensors"} <= names, names
        assert not [n for n in names if n.endswith((".pth", ".pt", ".bin", ".pkl"))], names

    artifact = unlearn(cfg)  # the same command again: resumes from the last complete checkpoint
    meta = json.loads((artifact / "spul.json").read_text())
    assert meta["training"]["resumed_from"] and meta["training"]["steps"] == STEPS
    assert torch.allclose(_prompt(artifact), reference, atol=1e-6), (_prompt(artifact) - reference).abs().max()


def test_half_written_staging_folder_is_not_resumed_from(tmp_path, tiny_model_dir):
    from transformers.trainer_utils import get_last_checkpoint

    ckpts = tmp_path / "checkpoints"
    (ckpts / ".staging" / "checkpoint-8").mkdir(parents=True)
    (ckpts / "checkpoint-4").mkdir()
    assert get_last_checkpoint(str(ckpts)).endswith("checkpoint-4")


def test_truncated_evaluation_cache_is_recomputed(tmp_path, tiny_model_dir):
    from spul.pipeline import evaluate

    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False})
    first = evaluate(cfg)
    caches = sorted((cfg.out / "cache" / "eval").glob("*.json"))
    assert caches
    for path in caches:
        text = path.read_text()
        path.write_text(text[: len(text) // 2])  # as if the machine died mid-write without atomic rename
    second = evaluate(cfg)
    assert [r.as_dict()["metrics"] for r in first] == [r.as_dict()["metrics"] for r in second]
    for path in caches:
        json.loads(path.read_text())  # rewritten whole
