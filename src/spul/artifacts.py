"""Unlearning artifacts: a PEFT adapter folder plus ``spul.json`` metadata tying it to its base model.

The folder loads with ``PeftModel.from_pretrained(base, folder)`` like any adapter; spul's own loader also
checks the base model's weight fingerprint, because a soft prompt trained against one model means nothing
(or something harmful) on another.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from spul import __version__
from spul.configuration import from_dict
from spul.data.tasks import TaskConfig
from spul.errors import ArtifactError
from spul.io import atomic_dir, read_json, sha256_text, write_json

METADATA = "spul.json"
MAX_METADATA_BYTES = 4_000_000  # spul.json is a few KB; anything this large is not one


def save_artifact(peft_model, folder: str | Path, metadata: dict[str, Any]) -> Path:
    """Write adapter weights (safetensors) and metadata into ``folder``, replacing it atomically."""
    folder = Path(folder)
    meta = {"format": "spul-artifact/1", "spul_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **metadata}
    with atomic_dir(folder) as tmp:
        if peft_model is not None:
            peft_model.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / METADATA, meta)
    return folder


def read_metadata(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / METADATA
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder {str(folder)!r} does not exist", "check the path (spul unlearn writes OUTPUT_DIR/artifact)")
    if not path.is_file():
        raise ArtifactError(f"{str(folder)!r} has no {METADATA}; it is not a spul artifact", "point at the folder written by spul unlearn")
    size = path.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise ArtifactError(f"{str(path)!r} is {size} bytes, more than metadata can be ({MAX_METADATA_BYTES})",
                            "point at a folder written by spul unlearn, or re-create the artifact")
    try:
        meta = read_json(path)
    except ValueError:
        raise ArtifactError(f"{str(path)!r} is not valid JSON (damaged artifact)", "re-run spul unlearn, or restore the artifact from a backup") from None
    if not isinstance(meta, dict) or "base_fingerprint" not in meta:
        raise ArtifactError(f"{str(path)!r} lacks the base model fingerprint", "re-create the artifact with spul unlearn")
    if not isinstance(meta["base_fingerprint"], str) or not meta["base_fingerprint"]:
        raise ArtifactError(f"{str(path)!r} has a base_fingerprint that is not a text ({type(meta['base_fingerprint']).__name__})",
                            "re-create the artifact with spul unlearn (the metadata was edited or damaged)")
    for key in ("base_model", "method"):
        if key in meta and not isinstance(meta[key], str):
            raise ArtifactError(f"{str(path)!r} has a {key} that is not a text", "re-create the artifact with spul unlearn")
    return meta


def check_base(meta: dict[str, Any], fingerprint: str, model_name: str) -> None:
    if meta["base_fingerprint"] != fingerprint:
        raise ArtifactError(
            f"artifact was trained on base model {meta.get('base_model', '?')!r} (fingerprint {meta['base_fingerprint'][:12]}), "
            f"but the loaded model {model_name!r} has fingerprint {fingerprint[:12]}",
            f"load the artifact onto the model it was made for ({meta.get('base_model', '?')})",
        )


def load_soft_prompt(model, folder: str | Path, fingerprint: str | None = None, model_name: str = ""):
    """Attach a soft-prompt artifact to ``model`` after checking it belongs to this model."""
    from peft import PeftModel

    from spul.models.loading import weights_fingerprint

    meta = read_metadata(folder)
    check_base(meta, fingerprint or weights_fingerprint(model), model_name or meta.get("base_model", ""))
    try:
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except Exception as err:  # noqa: BLE001 - a damaged adapter (truncated safetensors, bad JSON, ...) refuses the artifact
        first = str(err).splitlines()[0][:150] if str(err) else type(err).__name__
        raise ArtifactError(f"artifact {str(folder)!r} could not be loaded ({first})", "re-create it with spul unlearn") from None
    peft_model.eval()
    with torch.no_grad():
        finite = bool(torch.isfinite(peft_model.get_prompt(batch_size=1)).all())
    if not finite:
        raise ArtifactError(f"artifact {str(folder)!r} holds NaN or infinite prompt values", "re-train it (the training diverged), e.g. with a lower learning rate")
    return peft_model, meta


def artifact_identity(meta: dict[str, Any]) -> str:
    return sha256_text(repr(meta.get("created")), repr(meta.get("training")))[:16]


def task_of(meta: dict[str, Any], folder: str | Path):
    """The task the artifact was trained for (its template and labels), when recorded."""
    if not isinstance(meta.get("task"), dict):
        return None
    try:
        return from_dict(TaskConfig, meta["task"])
    except Exception as err:  # noqa: BLE001 - any malformed task section refuses the artifact
        raise ArtifactError(f"artifact {str(folder)!r} has an invalid task section ({str(err)[:120]})", "re-create it") from None


def common_info(folder: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What every loaded intervention records: the folder, the method, the task and the training numbers."""
    task = task_of(meta, folder)
    return {"task_config": task, "identity": artifact_identity(meta),
            "info": {"folder": str(folder), "created": meta.get("created"), "method": meta.get("method", "spul"),
                     "task_kind": task.kind.value if task else None}}
