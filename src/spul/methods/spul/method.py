"""SPUL as a registered method: train a soft prompt against the frozen base model; load it as ``SoftPrompt``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from spul.artifacts import base_model_record, common_info, save_artifact
from spul.configuration import to_dict
from spul.errors import ArtifactError
from spul.interventions import SoftPrompt
from spul.io import sha256_text
from spul.methods.registry import TrainJob, register_method
from spul.methods.spul.config import SpulConfig

log = logging.getLogger(__name__)


def train(job: TrainJob) -> Path:
    """Train the soft prompt; resume from the newest checkpoint under ``job.work_dir/checkpoints``."""
    from transformers.trainer_utils import get_last_checkpoint

    from spul import resume as resume_keys
    from spul.data.encoding import TaskEncoder
    from spul.methods.distributed import is_main_process
    from spul.methods.sharding import accelerate_shards, engine_name, full_weights, shard_frozen_base, sharding_requested
    from spul.methods.spul.trainer import SpulTrainer
    from spul.methods.training import AnswerCollator, AnswerDataset, build_examples
    from spul.models.loading import DType, load_model, resolve_device, weights_fingerprint
    from spul.models.soft_prompt import add_soft_prompt, count_trainable

    ucfg: SpulConfig = job.config
    data, base = job.data, job.base
    device = resolve_device(job.model.device)
    shard = sharding_requested(ucfg.shard_frozen_weights, device.type)
    model_cfg = job.model
    if shard or accelerate_shards(device.type):  # load on the CPU in the device's dtype; each process moves only its shard to the device
        model_cfg = type(model_cfg)(**{**to_dict(model_cfg), "dtype": DType.of(model_cfg.dtype.resolve(device)), "device": "cpu"})
    if job.model_and_tokenizer is not None and not (shard or accelerate_shards(device.type)):
        model, tokenizer = job.model_and_tokenizer
    else:
        model, tokenizer = load_model(model_cfg)
    fingerprint = weights_fingerprint(model)
    inputs = training_inputs(job, fingerprint)
    paraphraser = None
    if ucfg.augment.enabled and ucfg.augment.paraphrase_model:  # model rewrites: the paraphrase model's weights decide them too
        from spul.models.paraphrase import paraphraser_for

        paraphraser = paraphraser_for(ucfg.augment.paraphrase_model)
        inputs["paraphraser"] = paraphraser.identity
    if job.resume and resume_keys.artifact_is_current(_existing_metadata(Path(job.artifact_dir)), inputs):
        log.info("artifact is up to date for these inputs: %s", job.artifact_dir)
        return Path(job.artifact_dir)
    encoder = TaskEncoder(job.task, tokenizer, job.model.max_length)
    examples = build_examples(data, encoder, forget_target="generic", seed=ucfg.seed)
    peft_model = add_soft_prompt(model, ucfg.prompt_encoder, ucfg.prompt_length, ucfg.prompt_init,
                                 tokenizer=tokenizer, init_text=ucfg.prompt_init_text, seed=ucfg.seed,
                                 encoder_hidden_size=ucfg.encoder_hidden_size)
    checkpoints = Path(job.work_dir) / "checkpoints"
    args = ucfg.training_arguments(str(checkpoints), device.type)
    sharding = shard_frozen_base(peft_model, args.device) if shard else None  # args.device initialises torch.distributed
    if sharding:
        log.info("frozen weights sharded over %(processes)d processes: %(frozen_parameters_here)d of %(frozen_parameters)d here", sharding)
    dataset, callbacks, search = AnswerDataset(examples), list(job.callbacks or []), None
    if ucfg.augment.enabled:  # robust training: forget and retain rows rewritten by the attack suite's training pools
        from spul.methods.augmentation import AugmentedDataset, AugmentEpochCallback

        dataset = AugmentedDataset(examples, data, encoder, ucfg.augment, seed=ucfg.seed, paraphraser=paraphraser)
        callbacks.append(AugmentEpochCallback(dataset))
        if ucfg.augment.adversarial_every:  # adversarial injection search against the current prompt
            from spul.methods.augmentation import AdversarialSearchCallback

            search = AdversarialSearchCallback(dataset, peft_model, encoder)
            callbacks.append(search)
    trainer = SpulTrainer(model=peft_model, args=args, train_dataset=dataset, data_collator=AnswerCollator(tokenizer.pad_token_id),
                          callbacks=callbacks or job.callbacks)
    resuming = resume_keys.prepare_checkpoints(checkpoints, inputs, job.resume, "unlearn") if is_main_process() else job.resume
    last = get_last_checkpoint(str(checkpoints)) if resuming and checkpoints.is_dir() else None
    if search is not None:
        search.restore(last)
    started = time.time()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.time() - started
    peft_model.eval()
    meta = {
        "method": "spul",
        **base_model_record(base, job.pretrained_model, job.familiarized_dir),
        "base_fingerprint": fingerprint,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "tokenizer_fingerprint": sha256_text(repr(encoder.head_ids), repr(encoder.tail_ids), repr(encoder.candidate_ids))[:16],
        "task": to_dict(job.task.config),
        "max_length": job.model.max_length,
        "hyperparameters": to_dict(ucfg),
        "data": {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints()},
        "trainable_parameters": count_trainable(peft_model),
        "training": {"seconds": round(seconds, 1), "steps": trainer.state.global_step, "resumed_from": last,
                     "final_loss": round(float(result.training_loss), 5), "sharding": sharding,
                     "engine": engine_name(trainer.model_wrapped),
                     "complete": trainer.state.global_step >= trainer.state.max_steps,
                     **({"adversarial": search.found} if search is not None else {})},
        "resume_key": resume_keys.resume_key(inputs),
    }
    try:
        with full_weights(trainer.model_wrapped):  # every process takes part in gathering a sharded prompt
            if not trainer.is_world_process_zero():  # the main process writes the artifact
                return Path(job.artifact_dir)
            return save_artifact(peft_model, job.artifact_dir, meta)
    finally:
        _forget_wrapper(model)


def training_inputs(job: TrainJob, fingerprint: str) -> dict[str, Any]:
    """Everything that decides the trained soft prompt: the resume key of its checkpoints and artifact (``spul.resume``)."""
    from spul.resume import result_settings

    model = {k: v for k, v in to_dict(job.model).items() if k != "name_or_path"}
    return {"base": job.base, "base_fingerprint": fingerprint, "model": model, "task": to_dict(job.task.config),
            "data": job.data.fingerprints(), "unlearn": result_settings(to_dict(job.config))}


def _existing_metadata(folder: Path) -> dict[str, Any] | None:
    from spul.artifacts import read_metadata

    try:
        return read_metadata(folder) if folder.is_dir() else None
    except ArtifactError:
        return None


def _forget_wrapper(model) -> None:
    """Prompt learning does not touch the base model's modules: drop PEFT's bookkeeping so the model is bare again."""
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in model.__dict__:
            delattr(model, attr)


def artifact_vectors(model, folder: str | Path) -> torch.Tensor:
    """The artifact's soft prompt as ``[p, d]`` in the model dtype (the base model is checked by the caller)."""
    from peft import PeftConfig, PeftModel

    try:
        config = PeftConfig.from_pretrained(str(folder))
        if not getattr(config, "is_prompt_learning", False):
            raise ValueError(f"adapter type {config.peft_type} is not a soft prompt")
        dtype = model.get_input_embeddings().weight.dtype
        wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        wrapped.eval()
        with torch.no_grad():
            vectors = wrapped.get_prompt(batch_size=1)[0].detach().to(dtype).clone()
        _forget_wrapper(model)
        del wrapped
    except Exception as err:  # noqa: BLE001 - any failure to read the adapter (incl. SafetensorError) refuses it
        raise ArtifactError(f"artifact {str(folder)!r} could not be loaded ({str(err).splitlines()[0][:150] if str(err) else type(err).__name__})",
                            "re-create it with spul unlearn") from None
    if vectors.ndim != 2 or vectors.shape[1] != model.get_input_embeddings().weight.shape[1]:
        raise ArtifactError(f"artifact {str(folder)!r} has prompt shape {tuple(vectors.shape)}", "re-create it with spul unlearn for this model")
    if not torch.isfinite(vectors).all():
        raise ArtifactError(f"artifact {str(folder)!r} contains NaN or infinite values", "re-train it (the training diverged)")
    return vectors


def load(folder: Path, model, *, tokenizer=None, meta: dict[str, Any], name: str) -> SoftPrompt:
    if meta.get("hyperparameters", {}).get("prompt_encoder") == "prefix_tuning":
        from spul.interventions.deep_prompt import DeepPrompt

        return DeepPrompt(name, artifact_layers(model, folder), **common_info(folder, meta))
    return SoftPrompt(name, artifact_vectors(model, folder), **common_info(folder, meta))


def artifact_layers(model, folder: str | Path):
    """A deep-prompt artifact's per-layer prefix keys/values in the model dtype."""
    from peft import PeftModel

    from spul.models.deep_prompt import frozen_layers, is_prefix_tuning

    try:
        wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        if not is_prefix_tuning(wrapped):
            raise ValueError("adapter is not a prefix-tuning adapter")
        layers = frozen_layers(wrapped, model)
        _forget_wrapper(model)
        del wrapped
    except Exception as err:  # noqa: BLE001 - any failure to read the adapter refuses it
        raise ArtifactError(f"artifact {str(folder)!r} could not be loaded ({str(err).splitlines()[0][:150] if str(err) else type(err).__name__})",
                            "re-create it with spul unlearn") from None
    if not all(torch.isfinite(k).all() and torch.isfinite(v).all() for k, v in layers):
        raise ArtifactError(f"artifact {str(folder)!r} contains NaN or infinite values", "re-train it (the training diverged)")
    return layers


def display(meta: dict[str, Any]) -> str:
    hp = meta.get("hyperparameters", {})
    deep = ", deep" if hp.get("prompt_encoder") == "prefix_tuning" else ""
    return f"SPUL (p={hp.get('prompt_length', '?')}{deep})"


register_method("spul", SpulConfig, train, load, display, "soft prompt prepended to a frozen model (SPUL)")
