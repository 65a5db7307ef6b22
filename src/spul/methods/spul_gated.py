"""Gated SPUL (``spul_gated``): the soft prompt applied only to the prompts a classifier flags, as one artifact.

Training runs SPUL exactly as ``spul`` does (its own checkpoints and resume key under ``WORK/prompt``, so a
change of the gate's settings never retrains the prompt), then ECO's prompt classifier (``gate``: sentence
embeddings + logistic regression + conformal threshold, optionally trained with the attack suite's
augmentations, ``gate.augment``). The artifact folder holds the prompt's PEFT adapter and a ``spul.json`` with
the classifier head (JSON numbers); ``load_intervention`` turns it into ``Gated(SoftPrompt | DeepPrompt,
classifier)``, which evaluation, ``spul audit``, ``scripts/audit_suite.py`` and ``spul serve`` take like any
intervention. Rows the classifier does not flag run as the bare base model.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spul.methods.eco.config import ClassifierConfig
from spul.methods.registry import TrainJob, register_method
from spul.methods.spul.config import SpulConfig

log = logging.getLogger(__name__)


@dataclass
class SpulGatedConfig(SpulConfig):
    """SPUL's settings plus the gate (ECO's prompt classifier settings, ``augment`` included)."""

    method: str = field(default="spul_gated", metadata={"help": "the registered method these settings are for"})
    gate: ClassifierConfig = field(default_factory=ClassifierConfig, metadata={
        "help": "the prompt classifier that decides which prompts get the soft prompt (encoder, regularization, conformal, alpha, "
                "threshold, calibration_fraction, seed, augment: {families, fraction, entities, seed})"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.gate, dict):
            self.gate = ClassifierConfig(**self.gate)


def prompt_config(cfg: SpulGatedConfig) -> SpulConfig:
    """The plain SPUL settings of a gated config (what the prompt's own resume key sees)."""
    from spul.configuration import to_dict
    from spul.methods.registry import method_config

    values = {k: v for k, v in to_dict(cfg).items() if k not in ("gate", "method")}
    return method_config("spul", values)


def train(job: TrainJob) -> Path:
    """Train (or reuse) the prompt, train the gate, write the combined artifact; returns its folder."""
    from spul import resume as resume_keys
    from spul.artifacts import read_metadata
    from spul.configuration import to_dict
    from spul.data.splits import Split
    from spul.io import atomic_dir, sha256_text, write_json
    from spul.methods.eco.classifier import error_rates, train_classifier
    from spul.methods.spul.method import train as train_prompt

    cfg: SpulGatedConfig = job.config
    work = Path(job.work_dir) / "prompt"
    prompt_dir = train_prompt(replace(job, config=prompt_config(cfg), artifact_dir=work / "artifact", work_dir=work))
    from spul.methods.distributed import is_main_process

    if not is_main_process():  # under a multi-process launch the main process trains the gate and writes the artifact
        return Path(job.artifact_dir)
    prompt_meta = read_metadata(prompt_dir)
    data = job.data
    gate_key = sha256_text(str(prompt_meta.get("resume_key")), prompt_meta.get("created", ""), repr(to_dict(cfg.gate)),
                           repr(data.fingerprints()))[:16]
    folder = Path(job.artifact_dir)
    if job.resume and (folder / "spul.json").is_file():
        try:
            if read_metadata(folder).get("gate_key") == gate_key:
                log.info("gated artifact is up to date for these inputs: %s", folder)
                return folder
        except Exception:  # noqa: BLE001 - a damaged earlier artifact is rebuilt
            pass
    started = time.time()
    clf = train_classifier(cfg.gate, data[Split.TRAIN_FORGET]["text"].tolist(), data[Split.TRAIN_RETAIN]["text"].tolist())
    seconds = time.time() - started
    if Split.TEST_FORGET.value in data.sizes() and Split.TEST_RETAIN.value in data.sizes():
        clf.info["test"] = error_rates(clf, data[Split.TEST_FORGET]["text"].tolist(), data[Split.TEST_RETAIN]["text"].tolist())
    training = dict(prompt_meta.get("training") or {})
    training["classifier_seconds"] = round(seconds, 1)
    meta = {k: v for k, v in prompt_meta.items() if k not in ("format", "spul_version", "created")}
    meta.update({
        "format": "spul-artifact/1", "spul_version": prompt_meta.get("spul_version"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": "spul_gated",
        "hyperparameters": to_dict(cfg),
        "classifier": clf.to_dict(),
        "trainable_parameters": int(prompt_meta.get("trainable_parameters", 0)) + len(clf.weights) + 1,
        "training": training,
        "prompt": {"resume_key": prompt_meta.get("resume_key"), "created": prompt_meta.get("created")},
        "gate_key": gate_key,
        "resume_key": resume_keys.resume_key({"prompt": prompt_meta.get("resume_key"), "gate": gate_key}),
    })
    with atomic_dir(folder) as tmp:
        for item in Path(prompt_dir).iterdir():
            if item.is_file() and item.name != "spul.json":
                shutil.copy2(item, tmp / item.name)
        write_json(tmp / "spul.json", meta)
    return folder


def load(folder: Path, model, *, tokenizer=None, meta: dict[str, Any], name: str):
    from spul.artifacts import common_info
    from spul.errors import ArtifactError
    from spul.interventions import Gated
    from spul.methods.eco.classifier import PromptClassifier
    from spul.methods.spul.method import load as load_prompt

    try:
        classifier = PromptClassifier.from_dict(meta["classifier"])
    except Exception as err:  # noqa: BLE001 - a malformed gate refuses the artifact
        raise ArtifactError(f"gated SPUL artifact {str(folder)!r} has an unreadable classifier ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})",
                            "re-create it with spul unlearn (unlearn.method=spul_gated)") from None
    inner = load_prompt(folder, model, tokenizer=tokenizer, meta=meta, name=name)
    common = common_info(folder, meta)
    common["identity"] = f"spul_gated:{common['identity']}"
    return Gated(name, inner, classifier, **common)


def display(meta: dict[str, Any]) -> str:
    hp = meta.get("hyperparameters", {})
    deep = ", deep" if hp.get("prompt_encoder") == "prefix_tuning" else ""
    robust = ", robust gate" if (hp.get("gate") or {}).get("augment", {}).get("families") else ""
    return f"SPUL (p={hp.get('prompt_length', '?')}{deep}) on flagged prompts{robust}"


register_method("spul_gated", SpulGatedConfig, train, load, display,
                "SPUL's soft prompt only on prompts a classifier flags (ECO's classifier as the gate)")
