"""The whole protocol as Python functions: prepare → finetune → unlearn → evaluate (and ``run`` for all).

Each step reads what the previous one wrote under ``output_dir`` and skips work that is already done for the
same inputs, so an interrupted run resumes where it stopped:

    output_dir/data/                prepared splits + manifest
    output_dir/familiarized/model   the fine-tuned base model (the paper's "QLoRA" row)
    output_dir/unlearn/checkpoints  training checkpoints of the method (resume)
    output_dir/artifact             the method's artifact + spul.json (a soft prompt for SPUL)
    output_dir/report/              results.json, results.md, per-example predictions
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from spul.configuration import dump_yaml, to_dict
from spul.data.encoding import TaskEncoder
from spul.data.sources import load_unlearning_data, write_splits
from spul.data.splits import UnlearningData
from spul.data.tasks import Task
from spul.evaluation.evaluate import ModelResult, evaluate_model
from spul.evaluation.report import markdown_table, write_report
from spul.io import read_json, sha256_text, write_json, write_text
from spul.interventions import Gated, Intervention
from spul.methods.distributed import init_distributed, is_main_process
from spul.methods.registry import TrainJob, get_method, load_intervention
from spul.models.loading import ModelConfig, load_model, weights_fingerprint
from spul.run_config import RunConfig  # noqa: F401 - re-exported (spul.pipeline.RunConfig)

log = logging.getLogger(__name__)


def prepare(cfg: RunConfig) -> UnlearningData:
    """Load and validate the four splits and record them (with fingerprints) under ``output_dir/data``."""
    data = load_unlearning_data(cfg.data, Task(cfg.task))
    if is_main_process():  # under DDP every process loads the data; one records it
        write_splits(data, cfg.out / "data", {"config": to_dict(cfg.data), "warnings": data.warn_overlaps(),
                                              "leakage": data_leakage(data, cfg.out / "data" / "manifest.json")})
    return data


def data_leakage(data: UnlearningData, manifest: Path) -> dict[str, Any]:
    """The leakage report of these exact splits: reused from ``manifest`` when its fingerprints match."""
    from spul.data.leakage import check_leakage, public

    fingerprints = data.fingerprints()
    if manifest.is_file():
        old = read_json(manifest).get("leakage") or {}
        if old.get("fingerprints") == fingerprints:
            return old
    return {**public(check_leakage(data)), "fingerprints": fingerprints}


def _step_key(*parts: Any) -> str:
    return sha256_text(*(repr(p) for p in parts))[:16]


def base_model_path(cfg: RunConfig) -> str:
    """The model to unlearn from: the familiarised one when fine-tuning is on, else ``model.name_or_path``."""
    if not cfg.finetune.enabled:
        return cfg.model.name_or_path
    return str(cfg.out / "familiarized" / ("model" if cfg.finetune.merge else "adapter"))


def tracked(cfg: RunConfig, section, phase: str):
    """``section`` (a training config) with its tracking defaults filled in: TensorBoard events under
    ``OUTPUT/tensorboard/<phase>`` and a run name ``<output folder>-<phase>``, unless the config sets them."""
    from dataclasses import replace

    if not getattr(section, "report_to", None):
        return section
    return replace(section, logging_dir=section.logging_dir or str(cfg.out / "tensorboard" / phase),
                   run_name=section.run_name or f"{cfg.out.resolve().name}-{phase}")


def finetune(cfg: RunConfig, data: UnlearningData | None = None, resume: bool = True) -> str:
    """Familiarise the base model with the task (LoRA); reuse an earlier result for the same inputs.

    Its checkpoints carry a resume key too: checkpoints of other inputs are refused (``resume=False`` starts over).
    """
    from spul import resume as resume_keys
    from spul.methods.finetune import familiarize

    if not cfg.finetune.enabled:
        return cfg.model.name_or_path
    data = data or prepare(cfg)
    folder = cfg.out / "familiarized"
    from spul.methods.config import TRACKING_FIELDS

    settings = {k: v for k, v in to_dict(cfg.finetune).items() if k not in TRACKING_FIELDS}  # tracking never forces a redo
    key = _step_key(to_dict(cfg.model), to_dict(cfg.task), settings, data.fingerprints())
    stamp = folder / "done.json"
    if stamp.is_file() and read_json(stamp).get("key") == key and Path(base_model_path(cfg)).is_dir():
        log.info("familiarised model is up to date: %s", base_model_path(cfg))
        return base_model_path(cfg)
    inputs = {"model": to_dict(cfg.model), "task": to_dict(cfg.task), "data": data.fingerprints(),
              "finetune": resume_keys.result_settings(to_dict(cfg.finetune))}
    resuming = resume_keys.prepare_checkpoints(folder / "checkpoints", inputs, resume, "finetune") if is_main_process() else resume
    started = time.time()
    path = familiarize(cfg.model, Task(cfg.task), data, tracked(cfg, cfg.finetune, "familiarise"), folder, resume=resuming)
    write_json(stamp, {"key": key, "path": str(path), "seconds": round(time.time() - started, 1)})
    return str(path)


def _derived_model_config(cfg: RunConfig, name_or_path: str) -> ModelConfig:
    fields = to_dict(cfg.model)
    fields["name_or_path"] = name_or_path
    return ModelConfig(**fields)


def unlearn(cfg: RunConfig, data: UnlearningData | None = None, base: str | None = None, resume: bool = True,
            callbacks: list | None = None) -> Path:
    """Run the configured method (``unlearn.method``) against the frozen base model and save its artifact.

    With ``resume`` (the default) training continues from the newest checkpoint in ``output_dir/unlearn``, if
    those checkpoints were made from the same inputs (``spul.resume``; otherwise a ``ConfigError`` says what
    changed), and an artifact already finished from the same inputs is returned as it is. ``resume=False``
    starts over. ``callbacks`` are extra ``transformers.TrainerCallback``s (progress hooks, early stopping, tests).
    """
    data = data or prepare(cfg)
    base = base or (finetune(cfg, data) if cfg.finetune.enabled else cfg.model.name_or_path)
    job = TrainJob(model=_derived_model_config(cfg, base), task=Task(cfg.task), data=data, config=tracked(cfg, cfg.unlearn, "unlearn"),
                   artifact_dir=cfg.out / "artifact", work_dir=cfg.out / "unlearn", pretrained_model=cfg.model.name_or_path,
                   resume=resume, callbacks=callbacks, familiarized_dir=cfg.out / "familiarized" if cfg.finetune.enabled else None)
    return get_method(cfg.method).train(job)


def artifact_identity(fingerprint: str, intervention: Intervention) -> str:
    """The evaluation-cache identity of ``intervention`` applied to the model with ``fingerprint``."""
    return fingerprint + ":" + intervention.identity


def evaluate(cfg: RunConfig, data: UnlearningData | None = None, artifact: str | Path | None = None,
             base: str | None = None) -> list[ModelResult]:
    """Evaluate the base model and, if given, base + the artifact's intervention; write ``output_dir/report``.

    Launched as several processes (torchrun, accelerate launch), each scores its share of every split and rank 0
    writes the report (``spul.evaluation.evaluate``); every process returns the same results.
    """
    from spul.artifacts import read_metadata

    init_distributed()
    data = data or prepare(cfg)
    artifact = Path(artifact) if artifact else (cfg.out / "artifact" if (cfg.out / "artifact").is_dir() else None)
    if base is None:
        base = read_metadata(artifact)["base_model"] if artifact else base_model_path(cfg)
    task = Task(cfg.task)
    report_dir = cfg.out / "report"
    cache = cfg.out / "cache" / "eval"
    results: list[ModelResult] = []
    if cfg.evaluation.include_vanilla and cfg.finetune.enabled:
        vanilla, tok = load_model(_derived_model_config(cfg, cfg.model.name_or_path))
        enc = TaskEncoder(task, tok, cfg.model.max_length)
        results.append(evaluate_model(vanilla, enc, data, cfg.evaluation, name="Vanilla (zero-shot)", identity=weights_fingerprint(vanilla),
                                      cache_dir=cache, predictions_dir=report_dir / "predictions"))
        del vanilla
    model, tokenizer = load_model(_derived_model_config(cfg, base))
    encoder = TaskEncoder(task, tokenizer, cfg.model.max_length)
    fingerprint = weights_fingerprint(model)
    base_name = "Base (familiarized)" if cfg.finetune.enabled else "Base"
    results.append(evaluate_model(model, encoder, data, cfg.evaluation, name=base_name, identity=fingerprint,
                                  cache_dir=cache, predictions_dir=report_dir / "predictions"))
    if artifact is not None:
        intervention = load_intervention(artifact, model, tokenizer=tokenizer, fingerprint=fingerprint, model_name=base)
        meta = read_metadata(artifact)
        result = evaluate_model(model, encoder, data, cfg.evaluation, name=intervention.name, identity=artifact_identity(fingerprint, intervention),
                                intervention=intervention, cache_dir=cache, predictions_dir=report_dir / "predictions")
        result.info = {**result.info, "artifact": str(artifact), "trainable_parameters": meta.get("trainable_parameters"),
                       "training": meta.get("training")}
        results.append(result)
    manifest = cfg.out / "data" / "manifest.json"
    leakage = read_json(manifest).get("leakage") if manifest.is_file() else None
    if not leakage or leakage.get("fingerprints") != data.fingerprints():
        leakage = data_leakage(data, manifest)
    if is_main_process():
        write_report(results, report_dir, {"sizes": data.sizes(), "config": to_dict(cfg), "leakage": leakage})
    track = tracked(cfg, cfg.unlearn, "unlearn")  # the evaluation joins the unlearning run
    if getattr(track, "report_to", None) and is_main_process():
        from spul.evaluation.tracking import log_evaluation

        log_evaluation(results, markdown_table(results, with_f1=False), track.report_to, track.logging_dir, track.run_name)
    if artifact is not None and is_main_process() and Path(artifact).resolve() == (cfg.out / "artifact").resolve():
        from spul.artifacts import write_model_card  # this run's own artifact: its card gets the table

        write_model_card(artifact, markdown_table(results, with_f1=False))
    return results


def eco_dir(cfg: RunConfig) -> Path:
    return cfg.out / "eco"


def train_eco(cfg: RunConfig, data: UnlearningData, base: str, model=None, tokenizer=None) -> Path:
    """ECO with the ``eco:`` settings of ``cfg`` (what ``spul eco`` runs); artifact in ``OUTPUT_DIR/eco/artifact``."""
    job = TrainJob(model=_derived_model_config(cfg, base), task=Task(cfg.task), data=data, config=cfg.eco,
                   artifact_dir=eco_dir(cfg) / "artifact", work_dir=eco_dir(cfg), pretrained_model=cfg.model.name_or_path,
                   model_and_tokenizer=(model, tokenizer) if model is not None else None)
    return get_method("eco").train(job)


def evaluate_eco(cfg: RunConfig, data: UnlearningData, artifact: str | Path, base: str, spul_artifact: str | Path | None = None,
                 model=None, tokenizer=None, include_base: bool = True) -> list[ModelResult]:
    """Rows: base, the ECO artifact, and (with a SPUL artifact) SPUL and SPUL gated by ECO's classifier."""
    if model is None:
        model, tokenizer = load_model(_derived_model_config(cfg, base))
    encoder = TaskEncoder(Task(cfg.task), tokenizer, cfg.model.max_length)
    fingerprint = weights_fingerprint(model)
    eco = load_intervention(artifact, model, tokenizer=tokenizer, fingerprint=fingerprint, model_name=base)
    ev = cfg.evaluation
    cache = cfg.out / "cache" / "eval"
    preds = eco_dir(cfg) / "report" / "predictions"
    results: list[ModelResult] = []
    if include_base:
        results.append(evaluate_model(model, encoder, data, ev, name="Base (familiarized)" if cfg.finetune.enabled else "Base",
                                      identity=fingerprint, cache_dir=cache, predictions_dir=preds))
    row = evaluate_model(model, encoder, data, ev, name=eco.name, identity=artifact_identity(fingerprint, eco), intervention=eco,
                         cache_dir=cache, predictions_dir=preds)
    meta = read_json(Path(artifact) / "spul.json")
    row.info.update({"corruption": meta["corruption"], "artifact": str(artifact), "classifier": meta["classifier"]["info"],
                     "training": meta.get("training")})
    results.append(row)
    if spul_artifact is not None and Path(spul_artifact).is_dir():
        prompt = load_intervention(spul_artifact, model, tokenizer=tokenizer, fingerprint=fingerprint, model_name=base)
        results.append(evaluate_model(model, encoder, data, ev, name=prompt.name, identity=artifact_identity(fingerprint, prompt),
                                      intervention=prompt, cache_dir=cache, predictions_dir=preds))
        if cfg.eco.combined and isinstance(eco, Gated):
            gated = Gated(f"{prompt.name} on flagged prompts", prompt, eco.classifier, identity=f"{prompt.identity}:flags:{eco.identity}")
            combined = evaluate_model(model, encoder, data, ev, name=gated.name, identity=artifact_identity(fingerprint, gated),
                                      intervention=gated, cache_dir=cache, predictions_dir=preds)
            combined.info["spul_artifact"] = str(spul_artifact)
            results.append(combined)
    return results


def run_eco(cfg: RunConfig, data: UnlearningData | None = None, base: str | None = None) -> tuple[Path, ModelResult]:
    """One call for the Python API: train ECO against the base model and return (artifact, ECO result row)."""
    data = data or prepare(cfg)
    base = base or finetune(cfg, data)
    model, tokenizer = load_model(_derived_model_config(cfg, base))
    artifact = train_eco(cfg, data, base, model, tokenizer)
    results = evaluate_eco(cfg, data, artifact, base, model=model, tokenizer=tokenizer, include_base=False)
    return artifact, results[0]


def run(cfg: RunConfig, resume: bool = True) -> list[ModelResult]:
    """prepare → finetune → unlearn → evaluate, resuming any step already done (for the same inputs)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.time()
    data = prepare(cfg)
    timings["prepare"] = time.time() - t
    t = time.time()
    base = finetune(cfg, data, resume=resume)
    timings["finetune"] = time.time() - t
    t = time.time()
    artifact = unlearn(cfg, data, base, resume=resume)
    timings["unlearn"] = time.time() - t
    # recorded once training accepted these settings: a refused re-run leaves the earlier record as it was
    if is_main_process():
        write_text(cfg.out / "config.yaml", dump_yaml(cfg))
    t = time.time()
    results = evaluate(cfg, data, artifact, base)
    timings["evaluate"] = time.time() - t
    if is_main_process():
        write_json(cfg.out / "timings.json", {k: round(v, 1) for k, v in timings.items()})
    return results


def summary(results: list[ModelResult]) -> str:
    return markdown_table(results, with_f1=False)
