"""The whole protocol as Python functions: prepare → finetune → unlearn → evaluate (and ``run`` for all).

Each step reads what the previous one wrote under ``output_dir`` and skips work that is already done for the
same inputs, so an interrupted run resumes where it stopped:

    output_dir/data/                prepared splits + manifest
    output_dir/familiarized/model   the fine-tuned base model (the paper's "QLoRA" row)
    output_dir/unlearn/checkpoints  SPUL training checkpoints (resume)
    output_dir/artifact             the soft prompt + spul.json
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
from spul.methods.distributed import is_main_process
from spul.models.loading import (DType, ModelConfig, load_model, local_model_path, portable_model_ref, resolve_device,
                                 weights_fingerprint)
from spul.run_config import RunConfig  # noqa: F401 - re-exported (spul.pipeline.RunConfig)

log = logging.getLogger(__name__)


def prepare(cfg: RunConfig) -> UnlearningData:
    """Load and validate the four splits and record them (with fingerprints) under ``output_dir/data``."""
    data = load_unlearning_data(cfg.data, Task(cfg.task))
    if is_main_process():  # under DDP every process loads the data; one records it
        write_splits(data, cfg.out / "data", {"config": to_dict(cfg.data)})
    return data


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

    if not section.report_to:
        return section
    return replace(section, logging_dir=section.logging_dir or str(cfg.out / "tensorboard" / phase),
                   run_name=section.run_name or f"{cfg.out.resolve().name}-{phase}")


def base_model_record(cfg: RunConfig, base: str) -> dict[str, Any]:
    """How ``spul.json`` names the frozen base so it resolves from any folder and machine: ``base_model`` (a hub
    id, ``packaged:NAME`` or an absolute folder), ``base_model_path`` (the absolute folder on this machine, when
    local) and, after familiarisation, the pretrained model plus the absolute LoRA adapter and merged folders."""
    record: dict[str, Any] = {
        "base_model": portable_model_ref(base),
        "base_model_path": local_model_path(base),
        "pretrained_model": portable_model_ref(cfg.model.name_or_path),
    }
    if cfg.finetune.enabled:
        folder = cfg.out / "familiarized"
        record["familiarization"] = {
            "pretrained_model": portable_model_ref(cfg.model.name_or_path),
            "adapter": str((folder / "adapter").resolve()) if (folder / "adapter").is_dir() else None,
            "merged_model": str((folder / "model").resolve()) if (folder / "model").is_dir() else None,
        }
    return record


def finetune(cfg: RunConfig, data: UnlearningData | None = None) -> str:
    """Familiarise the base model with the task (LoRA); reuse an earlier result for the same inputs."""
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
    started = time.time()
    path = familiarize(cfg.model, Task(cfg.task), data, tracked(cfg, cfg.finetune, "familiarise"), folder)
    write_json(stamp, {"key": key, "path": str(path), "seconds": round(time.time() - started, 1)})
    return str(path)


def _derived_model_config(cfg: RunConfig, name_or_path: str) -> ModelConfig:
    fields = to_dict(cfg.model)
    fields["name_or_path"] = name_or_path
    return ModelConfig(**fields)


def unlearn(cfg: RunConfig, data: UnlearningData | None = None, base: str | None = None, resume: bool = True,
            callbacks: list | None = None) -> Path:
    """Train the soft prompt against the frozen base model and save the artifact.

    With ``resume`` (the default) training continues from the newest checkpoint in ``output_dir/unlearn``.
    ``callbacks`` are extra ``transformers.TrainerCallback``s (progress hooks, early stopping, tests).
    """
    from transformers.trainer_utils import get_last_checkpoint

    from spul.artifacts import save_artifact
    from spul.methods.sharding import shard_frozen_base, sharding_requested
    from spul.methods.spul import SpulTrainer
    from spul.methods.training import AnswerCollator, AnswerDataset, build_examples
    from spul.models.soft_prompt import add_soft_prompt, count_trainable

    data = data or prepare(cfg)
    base = base or (finetune(cfg, data) if cfg.finetune.enabled else cfg.model.name_or_path)
    ucfg = tracked(cfg, cfg.unlearn, "unlearn")
    device = resolve_device(cfg.model.device)
    shard = sharding_requested(ucfg.shard_frozen_weights)
    model_cfg = _derived_model_config(cfg, base)
    if shard:  # load on the CPU in the device's dtype; each process moves only its shard to the device
        model_cfg.dtype = DType.of(model_cfg.dtype.resolve(device))
        model_cfg.device = "cpu"
    model, tokenizer = load_model(model_cfg)
    fingerprint = weights_fingerprint(model)
    task = Task(cfg.task)
    encoder = TaskEncoder(task, tokenizer, cfg.model.max_length)
    examples = build_examples(data, encoder, forget_target="generic", seed=ucfg.seed)
    peft_model = add_soft_prompt(model, ucfg.prompt_encoder, ucfg.prompt_length, ucfg.prompt_init,
                                 tokenizer=tokenizer, init_text=ucfg.prompt_init_text, seed=ucfg.seed,
                                 encoder_hidden_size=ucfg.encoder_hidden_size)
    workdir = cfg.out / "unlearn"
    args = ucfg.training_arguments(str(workdir / "checkpoints"), device.type)
    sharding = shard_frozen_base(peft_model, args.device) if shard else None  # args.device initialises torch.distributed
    if sharding:
        log.info("frozen weights sharded over %(processes)d processes: %(frozen_parameters_here)d of %(frozen_parameters)d here", sharding)
    trainer = SpulTrainer(model=peft_model, args=args, train_dataset=AnswerDataset(examples), data_collator=AnswerCollator(tokenizer.pad_token_id),
                          callbacks=callbacks)
    last = get_last_checkpoint(str(workdir / "checkpoints")) if resume and (workdir / "checkpoints").is_dir() else None
    started = time.time()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.time() - started
    peft_model.eval()
    meta = {
        "method": "spul",
        **base_model_record(cfg, base),
        "base_fingerprint": fingerprint,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "tokenizer_fingerprint": sha256_text(repr(encoder.head_ids), repr(encoder.tail_ids), repr(encoder.candidate_ids))[:16],
        "task": to_dict(cfg.task),
        "max_length": cfg.model.max_length,
        "hyperparameters": to_dict(ucfg),
        "data": {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints()},
        "trainable_parameters": count_trainable(peft_model),
        "training": {"seconds": round(seconds, 1), "steps": trainer.state.global_step, "resumed_from": last,
                     "final_loss": round(float(result.training_loss), 5), "sharding": sharding},
    }
    if not trainer.is_world_process_zero():  # under DDP the main process writes the artifact
        return cfg.out / "artifact"
    return save_artifact(peft_model, cfg.out / "artifact", meta)


def evaluate(cfg: RunConfig, data: UnlearningData | None = None, artifact: str | Path | None = None,
             base: str | None = None) -> list[ModelResult]:
    """Evaluate the base model and, if given, base + artifact; write ``output_dir/report``."""
    from spul.artifacts import load_soft_prompt, read_metadata
    from spul.models.soft_prompt import prompt_vectors

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
        peft_model, meta = load_soft_prompt(model, artifact, fingerprint, base)
        dtype = peft_model.get_input_embeddings().weight.dtype
        provider = lambda n, rows: (prompt_vectors(peft_model, n, dtype), None)  # noqa: E731
        identity = fingerprint + ":" + sha256_text(repr(meta.get("created")), repr(meta.get("training")))[:16]
        result = evaluate_model(peft_model, encoder, data, cfg.evaluation, name=f"SPUL (p={meta['hyperparameters']['prompt_length']})",
                                identity=identity, prompt_provider=provider, cache_dir=cache, predictions_dir=report_dir / "predictions")
        result.info = {"artifact": str(artifact), "trainable_parameters": meta.get("trainable_parameters"), "training": meta.get("training")}
        results.append(result)
    write_report(results, report_dir, {"sizes": data.sizes(), "config": to_dict(cfg)})
    track = tracked(cfg, cfg.unlearn, "unlearn")  # the evaluation joins the unlearning run
    if track.report_to and is_main_process():
        from spul.evaluation.tracking import log_evaluation

        log_evaluation(results, markdown_table(results, with_f1=False), track.report_to, track.logging_dir, track.run_name)
    if artifact is not None and is_main_process() and Path(artifact).resolve() == (cfg.out / "artifact").resolve():
        from spul.artifacts import write_model_card  # this run's own artifact: its card gets the table

        write_model_card(artifact, markdown_table(results, with_f1=False))
    return results


def run(cfg: RunConfig) -> list[ModelResult]:
    """prepare → finetune → unlearn → evaluate, resuming any step already done."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_text(cfg.out / "config.yaml", dump_yaml(cfg))
    timings: dict[str, float] = {}
    t = time.time()
    data = prepare(cfg)
    timings["prepare"] = time.time() - t
    t = time.time()
    base = finetune(cfg, data)
    timings["finetune"] = time.time() - t
    t = time.time()
    artifact = unlearn(cfg, data, base)
    timings["unlearn"] = time.time() - t
    t = time.time()
    results = evaluate(cfg, data, artifact, base)
    timings["evaluate"] = time.time() - t
    write_json(cfg.out / "timings.json", {k: round(v, 1) for k, v in timings.items()})
    return results


def summary(results: list[ModelResult]) -> str:
    return markdown_table(results, with_f1=False)
