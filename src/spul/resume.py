"""Resume keys: checkpoints and artifacts remember the inputs they were made from.

A training step writes ``resume.json`` next to its checkpoints with a hash of everything that decides the
result (base model and its weight fingerprint, task, data fingerprints, the method's hyperparameters) and the
flattened inputs themselves. Resuming is allowed only for the same key; with a different key the run is
refused with one line naming what changed, and the user picks a new output folder or ``--no-resume`` (which
starts over and replaces the old checkpoints). Nothing is ever silently reused for different inputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from spul.errors import ConfigError
from spul.io import read_json, sha256_text, write_json

STAMP = "resume.json"

# settings that change how a run is watched or saved, not what it computes
NOT_RESULT_SETTINGS = ("progress_bar", "save_steps", "save_total_limit", "logging_steps", "report_to", "run_name", "logging_dir")


# Settings added after checkpoints, artifacts and experiment cells already existed, with the value at which they
# change nothing: at that value they are left out of keys, so earlier results stay valid (any other value enters
# the key). (parent section, setting) -> "is inert" test.
LATER_SETTINGS: dict[tuple[str, str], Any] = {
    ("augment", "paraphrase_model"): lambda v: v is None,
    ("augment", "adversarial_every"): lambda v: not v,
    ("augment", "adversarial_candidates"): lambda v: True,  # inert while adversarial_every is 0 (checked below)
    ("augment", "adversarial_rows"): lambda v: True,
    ("classifier", "augment"): lambda v: isinstance(v, dict) and not v.get("families"),
}


def stable_settings(settings: Any, parent: str = "") -> Any:
    """``settings`` (nested plain values) without the later-added settings of ``LATER_SETTINGS`` at their inert values."""
    if not isinstance(settings, dict):
        return settings
    adversarial_off = parent == "augment" and not settings.get("adversarial_every")
    out = {}
    for key, value in settings.items():
        inert = LATER_SETTINGS.get((parent, key))
        if inert is not None and inert(value) and (key not in ("adversarial_candidates", "adversarial_rows") or adversarial_off):
            continue
        out[key] = stable_settings(value, key)
    return out


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the ones that do not change the result (progress bars, checkpoint cadence), and
    without later-added settings at their inert values (``stable_settings``)."""
    return stable_settings({k: v for k, v in settings.items() if k not in NOT_RESULT_SETTINGS})


class StaleCheckpoints(ConfigError):
    """Checkpoints in the folder were made from other inputs than the run asks for."""


def flatten(inputs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"unlearn": {"alpha": 0.5}}`` → ``{"unlearn.alpha": 0.5}``."""
    flat: dict[str, Any] = {}
    for key, value in inputs.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def resume_key(inputs: dict[str, Any]) -> str:
    flat = flatten(inputs)
    return sha256_text(*(f"{k}={flat[k]!r}" for k in sorted(flat)))[:16]


def _changes(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = []
    for name in names[:limit]:
        before, after = repr(old.get(name, "?")), repr(new.get(name, "?"))
        if len(before) + len(after) > 80:
            parts.append(f"{name} changed")
        else:
            parts.append(f"{name} {before} → {after}")
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(parts) + more if parts else "unknown inputs (no record of them)"


def has_checkpoints(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.startswith("checkpoint-") for p in folder.iterdir())


def prepare_checkpoints(folder: str | Path, inputs: dict[str, Any], resume: bool, what: str = "training") -> bool:
    """Make ``folder`` hold checkpoints of exactly ``inputs``; returns whether to resume from them.

    ``resume=False`` starts over (old checkpoints are removed). With ``resume`` and checkpoints from other
    inputs (or from before resume keys existed) a ``ConfigError`` names what changed.
    """
    folder = Path(folder)
    key, flat = resume_key(inputs), flatten(inputs)
    stamp = folder / STAMP
    if has_checkpoints(folder):
        if not resume:
            shutil.rmtree(folder)
        else:
            recorded = read_json(stamp) if stamp.is_file() else {}
            if recorded.get("key") == key:
                return True
            raise StaleCheckpoints(
                f"{str(folder)!r} holds {what} checkpoints made with other inputs ({_changes(recorded.get('inputs') or {}, flat)})",
                "use a new output_dir for the new settings, or add --no-resume to start over (the old checkpoints are then deleted)",
            )
    folder.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"key": key, "inputs": flat})
    return False


def artifact_is_current(meta: dict[str, Any] | None, inputs: dict[str, Any]) -> bool:
    """Whether an existing artifact's metadata records the same resume key (re-running would change nothing)."""
    return bool(meta) and meta.get("resume_key") == resume_key(inputs) and meta.get("training", {}).get("complete", False)
