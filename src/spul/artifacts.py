"""Unlearning artifacts: a PEFT adapter folder plus ``spul.json`` metadata tying it to its base model.

The folder loads with ``PeftModel.from_pretrained(base, folder)`` like any adapter; spul's own loader also
checks the base model's weight fingerprint, because a soft prompt trained against one model means nothing
(or something harmful) on another.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from spul import __version__
from spul.configuration import from_dict
from spul.data.tasks import TaskConfig
from spul.errors import ArtifactError
from spul.resume import artifact_is_current
from spul.io import atomic_dir, read_json, sha256_text, write_json, write_text

METADATA = "spul.json"
CARD = "README.md"
MAX_METADATA_BYTES = 4_000_000  # spul.json is a few KB; anything this large is not one


def base_model_record(base: str, pretrained_model: str = "", familiarized_dir: str | Path | None = None) -> dict[str, Any]:
    """How ``spul.json`` names the frozen base so it resolves from any folder and machine: ``base_model`` (a hub
    id, ``packaged:NAME`` or an absolute folder), ``base_model_path`` (the absolute folder on this machine, when
    local) and, after familiarisation, the pretrained model plus the absolute LoRA adapter and merged folders."""
    from spul.models.loading import local_model_path, portable_model_ref

    record: dict[str, Any] = {
        "base_model": portable_model_ref(base),
        "base_model_path": local_model_path(base),
        "pretrained_model": portable_model_ref(pretrained_model or base),
    }
    if familiarized_dir is not None:
        folder = Path(familiarized_dir)
        record["familiarization"] = {
            "pretrained_model": portable_model_ref(pretrained_model or base),
            "adapter": str((folder / "adapter").resolve()) if (folder / "adapter").is_dir() else None,
            "merged_model": str((folder / "model").resolve()) if (folder / "model").is_dir() else None,
        }
    return record


def save_artifact(peft_model, folder: str | Path, metadata: dict[str, Any]) -> Path:
    """Write adapter weights (safetensors) and metadata into ``folder``, replacing it atomically."""
    folder = Path(folder)
    meta = {"format": "spul-artifact/1", "spul_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **metadata}
    with atomic_dir(folder) as tmp:
        if peft_model is not None:
            peft_model.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / METADATA, meta)
        if meta.get("method") == "spul":  # the card describes a soft prompt; other methods keep their own files
            write_text(tmp / CARD, model_card(meta))  # replaces PEFT's boilerplate card
    return folder


def _yaml_list(values) -> str:
    return "[" + ", ".join(json.dumps(str(v)) for v in values) + "]"


def model_card(meta: dict[str, Any], results_table: str | None = None) -> str:
    """The artifact's README.md: what was forgotten, the template, results, limits and how to load it."""
    task = meta.get("task") or {}
    data = meta.get("data") or {}
    hp = meta.get("hyperparameters") or {}
    base = meta.get("base_model", "?")
    peft_base = meta.get("base_model_path") or base
    method = meta.get("method", "spul")
    sizes = data.get("sizes") or {}
    size_text = ", ".join(f"{k} {v}" for k, v in sizes.items()) or "not recorded"
    template = task.get("template", "")
    label_words = task.get("label_words") or []
    generic = task.get("generic_labels") or []
    hub_base = base if not base.startswith(("/", "packaged:")) else None
    lines = [
        "---",
        "library_name: peft",
        *([f"base_model: {hub_base}"] if hub_base else []),
        "tags: [spul, unlearning, soft-prompt, peft]",
        "---",
        "",
        f"# Unlearning artifact ({method})",
        "",
        "A soft prompt that makes the frozen base model forget one subset of a task at inference time; the",
        "model's weights are unchanged. Made with [spul](https://pypi.org/project/spul/) " + str(meta.get("spul_version", "")) + ".",
        "",
        "## What was forgotten",
        "",
        f"- Data: `{data.get('source', '?')}` — rows per split: {size_text}. The forget split (`train_forget`) is what",
        "  the prompt makes the model forget; the retain split is what it must keep answering.",
        f"- Task template: `{json.dumps(template)[1:-1]}`",
        f"- Label words: {', '.join(f'`{w}`' for w in label_words) or '—'}; on forgotten inputs the model answers a generic",
        f"  label instead: {', '.join(f'`{w}`' for w in generic) or '—'}.",
        f"- Base model: `{base}` (weights fingerprint `{str(meta.get('base_fingerprint', ''))[:16]}`)",
    ]
    fam = meta.get("familiarization")
    if fam:
        lines.append(f"- The base was familiarised with the task first: `{fam.get('pretrained_model')}` + LoRA adapter "
                     f"`{fam.get('adapter') or '—'}` (merged copy: `{fam.get('merged_model') or '—'}`).")
    if hp:
        lines.append(f"- Soft prompt: {hp.get('prompt_length', '?')} tokens ({hp.get('prompt_encoder', '?')}), "
                     f"α={hp.get('alpha', '?')}, β={hp.get('beta', '?')}, {hp.get('num_epochs', '?')} epochs, lr {hp.get('learning_rate', '?')}.")
    lines += ["", "## Results", ""]
    lines += [results_table.strip(), "", "Accuracy (%) on each split; lower on forget, unchanged on retain is the goal."] if results_table \
        else ["Not evaluated yet: `spul evaluate -c CONFIG` writes the table here."]
    lines += [
        "",
        "## How to load",
        "",
        "With spul (checks the base model's fingerprint before applying the prompt):",
        "",
        "```bash",
        "spul evaluate -c CONFIG --artifact THIS_FOLDER",
        f"spul serve --model {base} --artifact forget=THIS_FOLDER --keys keys.yaml   # docs/serving.md",
        "```",
        "",
        "With plain PEFT:",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        'model = AutoPeftModelForCausalLM.from_pretrained("THIS_FOLDER")',
        f'tokenizer = AutoTokenizer.from_pretrained("{peft_base}")',
        'tokenizer.padding_side = "left"  # see the note below',
        "```",
        "",
        "Render every input through the template above and score (or generate) the answer after it; the prompt",
        "only acts on inputs in the task's format.",
        "",
        "**Padding (plain PEFT users):** spul pads on the left, so each row's last position is its last real token",
        "and the soft prompt sits before the padding. Many tokenizers pad on the right by default; with right",
        "padding a batched forward pass reads the next-token scores at pad positions and the numbers above are",
        "not reproduced. Set `tokenizer.padding_side = \"left\"` (or score one row at a time).",
        "",
        "## Limits",
        "",
        "- The weights still hold the knowledge: anyone who runs the base model without this prompt (or removes",
        "  it) gets the original answers. This is an inference-time guard for deployments that control the prompt.",
        "- Measured only on the splits above, in this template and language; paraphrases, other templates and",
        "  adversarial prompts can recover forgotten answers (`spul audit` measures some of these).",
        "- Valid only on the exact base model named above (spul refuses others by fingerprint; plain PEFT does not check).",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder: str | Path, results_table: str | None = None) -> Path:
    """(Re)write the artifact's README.md, e.g. once evaluation results exist."""
    folder = Path(folder)
    return write_text(folder / CARD, model_card(read_metadata(folder), results_table))


def is_current_artifact(folder: str | Path, inputs: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete artifact made from ``inputs`` (its resume key matches), so re-running would
    change nothing; a missing, unreadable or older artifact is not current (it is made again)."""
    if not (Path(folder) / METADATA).is_file():
        return False
    try:
        return artifact_is_current(read_metadata(folder), inputs)
    except Exception:  # noqa: BLE001 - an unreadable old artifact is re-made
        return False


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
