"""Pickle-free, atomic training checkpoints for ``transformers.Trainer``.

The stock Trainer writes optimizer, scheduler, scaler and RNG state with ``torch.save`` (pickle: loading a
checkpoint from someone else can run code) straight into ``checkpoint-N/`` (a crash mid-save leaves a
half-written folder that ``get_last_checkpoint`` would pick). Here every state dict is split into its tensors
(one safetensors file) and everything else (one JSON file), and a checkpoint is assembled in a hidden staging
folder and renamed into place only when complete. Single-process runs only: with several processes (DDP,
sharded weights) ``AnswerTrainer`` leaves checkpointing to the stock Trainer, which coordinates the ranks.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from spul.io import atomic_path, read_json, write_json

STAGING = ".staging"
STATE_FILES = {"optimizer": "optimizer", "scheduler": "scheduler", "scaler": "scaler", "rng": "rng_state"}


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON tree (tensors replaced by references) and a flat tensor dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64) if x.dtype == np.uint32 else np.ascontiguousarray(x))
            return {"__ndarray__": path, "dtype": str(x.dtype)}
        if isinstance(x, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(x.items())]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, (np.integer, np.floating, np.bool_)):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {path} without pickle")

    return walk(obj, "s"), tensors


def decode_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [decode_state(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return tensors[tree["__ndarray__"]].numpy().astype(tree["dtype"])
        if "__tuple__" in tree:
            return tuple(decode_state(v, tensors) for v in tree["__tuple__"])
        if "__dict__" in tree:
            return {decode_state(k, tensors): decode_state(v, tensors) for k, v in tree["__dict__"]}
    return tree


def save_state(obj: Any, folder: str | os.PathLike, name: str) -> None:
    """``folder/name.json`` + ``folder/name.safetensors``, each written atomically."""
    tree, tensors = encode_state(obj)
    folder = Path(folder)
    with atomic_path(folder / f"{name}.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / f"{name}.json", {"format": "spul-state/1", "tree": tree})


def load_state(folder: str | os.PathLike, name: str) -> Any | None:
    """The state saved by ``save_state``, or None when the checkpoint has none."""
    folder = Path(folder)
    if not (folder / f"{name}.json").is_file():
        return None
    tensors = load_file(str(folder / f"{name}.safetensors")) if (folder / f"{name}.safetensors").is_file() else {}
    return decode_state(read_json(folder / f"{name}.json")["tree"], tensors)


def has_state(folder: str | os.PathLike | None, name: str) -> bool:
    return folder is not None and (Path(folder) / f"{name}.json").is_file()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.random.set_rng_state_all(states)


def save_checkpoint_atomically(run_dir: str, checkpoint_name: str, write: Callable[[], None], save_total_limit: int | None) -> Path:
    """Run ``write`` (which fills ``run_dir/.staging/checkpoint_name``), then rename the folder into place."""
    from transformers.trainer_utils import rotate_checkpoints

    run = Path(run_dir)
    staged = run / STAGING / checkpoint_name
    if staged.exists():
        shutil.rmtree(staged)
    write()
    for leftover in staged.glob("*.pth"):  # anything the stock code still pickled
        leftover.unlink()
    target = run / checkpoint_name
    if target.exists():
        old = run / STAGING / f"{checkpoint_name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)
    shutil.rmtree(run / STAGING, ignore_errors=True)
    rotate_checkpoints(output_dir=str(run), save_total_limit=save_total_limit, use_mtime=False)
    return target


TRAINABLE = "trainable_state.safetensors"


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_trainable(model, folder: str | os.PathLike) -> None:
    """Every parameter that trains, under its own name (the P-tuning MLP's weights included)."""
    params = _trainable(model)
    if not params:
        return
    tensors = {name: p.detach().to("cpu").contiguous().clone() for name, p in params.items()}
    with atomic_path(Path(folder) / TRAINABLE) as tmp:
        save_file(tensors, str(tmp))


def load_trainable(model, folder: str | os.PathLike) -> bool:
    """Put the saved trainable parameters back; False when the checkpoint has none (older checkpoints)."""
    from spul.errors import TrainingError

    path = Path(folder) / TRAINABLE
    if not path.is_file():
        return False
    saved = load_file(str(path))
    params = _trainable(model)
    if set(saved) != set(params) or any(saved[n].shape != params[n].shape for n in params):
        raise TrainingError(f"checkpoint {str(folder)!r} holds other trainable parameters than this model",
                            "resume with the settings it was made with, or start over with --no-resume")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name].to(p.device, p.dtype))
    return True
