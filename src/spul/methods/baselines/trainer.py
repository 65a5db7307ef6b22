"""What every weight-changing method shares: one ``AnswerTrainer`` subclass whose loss is the method's
``objective``, the reference model (the same model with its LoRA adapter disabled, or a frozen copy under full
tuning), and ``train_weights`` / ``load_weights`` that save and load such a method as an artifact.

Unlike SPUL these change the model's weights, so an artifact is a LoRA adapter (``tuning=lora``) or a whole
model folder (``tuning=full``), each with ``spul.json`` naming the base model it was trained from. Loaded, it is
a ``LoraDelta`` or ``WeightSwap`` intervention on the shared frozen model.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from spul.artifacts import base_model_record, common_info, save_artifact
from spul.configuration import to_dict
from spul.data.encoding import EncodedExample, TaskEncoder
from spul.data.splits import UnlearningData
from spul.data.tasks import Task
from spul.errors import ArtifactError
from spul.interventions import LoraDelta, WeightSwap
from spul.methods.baselines.config import BaselineConfig, BaselineMethod, Tuning, WeightConfig
from spul.methods.losses import BASELINE_LOSSES, IGNORE, LossParts, kl_base_to_prompted, per_row_mean, token_nll
from spul.methods.registry import TrainJob
from spul.methods.sharding import refuse_fsdp_launch
from spul.methods.training import AnswerCollator, AnswerDataset, AnswerTrainer, build_examples
from spul.models.forward import hidden_states, lm_logits
from spul.models.loading import ModelConfig, load_model, resolve_device, weights_fingerprint
from spul.models.lora import add_lora
from spul.models.soft_prompt import count_trainable

log = logging.getLogger(__name__)

# objective(trainer, model, inputs) -> LossParts: the method's loss on one batch
Objective = Callable[["WeightTrainer", Any, dict[str, torch.Tensor]], LossParts]


class WeightTrainer(AnswerTrainer):
    """Trains weights (LoRA or all) with the method's ``objective``; ``reference(...)`` gives the frozen model.

    The reference: with LoRA, the same model with its adapter disabled (no second copy); with full fine-tuning,
    ``ref_model``, a frozen copy made before training (twice the weight memory).
    """

    frozen_trunk_in_eval_mode = False

    def __init__(self, *args, objective: Objective, config: WeightConfig, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.config = config
        self.baseline = config  # the historical name
        self.ref_model = ref_model

    def reference_forward(self, model, fn: Callable[[Any], Any]):
        """``fn(reference_model)`` without gradient: the frozen copy, or ``model`` with its adapter disabled."""
        with torch.no_grad():
            if self.ref_model is not None:
                return fn(self.ref_model)
            with model.disable_adapter():
                return fn(model)

    def _reference_logits(self, model, inputs: dict[str, torch.Tensor], retain: torch.Tensor) -> torch.Tensor:
        """The frozen reference's answer logits on the rows ``retain``, each row's hidden states computed once."""

        def compute(ids, mask):
            return self.reference_forward(model, lambda m: hidden_states(m, ids, mask))

        hidden = self.reference_answer_hidden(inputs, retain, compute, cache=True)
        return self.reference_forward(model, lambda m: lm_logits(m, hidden))  # the head too may carry LoRA weights

    def reference_row_nll(self, model, inputs: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """The reference model's per-row mean NLL of ``labels`` on the batch rows ``rows`` (cached per data-set row)."""
        logits = self._reference_logits(model, inputs, rows)
        labels = inputs["labels"][rows]
        real = labels != IGNORE  # the order answer_positions and the reference cache use: row-major over [B, K]
        which = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)[real]
        return per_row_mean(token_nll(logits, labels[real]), which, labels.shape[0])

    def batch_loss(self, model, inputs):
        parts = self.objective(self, model, inputs)
        self.record(total=parts.total, forget=parts.forget, retain=parts.retain, kl=parts.kl)
        return parts.total, {}


BaselineTrainer = WeightTrainer


def baseline_objective(name: str) -> Objective:
    """The objective of one of the paper's baselines (GA, RL, GA+KL, GA+GD) over per-row answer NLLs."""
    loss = BASELINE_LOSSES[name]
    with_kl = name == BaselineMethod.GA_KL.value

    def objective(trainer: WeightTrainer, model, inputs) -> LossParts:
        cfg = trainer.config
        row_nll, logits, rows = trainer.answer_nll(model, inputs, with_hidden=True)
        retain = ~inputs["is_forget"]
        row_kl = None
        if with_kl and bool(retain.any()):
            base_logits = trainer._reference_logits(model, inputs, retain)
            retain_tokens = retain[rows]
            token_kl = kl_base_to_prompted(logits[retain_tokens], base_logits)
            row_kl = per_row_mean(token_kl, rows[retain_tokens], row_nll.shape[0])
        return loss(row_nll, inputs["is_forget"], row_kl, cfg.retain_weight, cfg.kl_weight, cfg.nll_cap)

    return objective


def baseline_examples(data: UnlearningData, encoder: TaskEncoder, cfg: BaselineConfig) -> list[EncodedExample]:
    """GA and RL see forget rows only; GA+KL and GA+GD also retain rows. RL's forget targets are generic labels."""
    target = "generic" if cfg.method is BaselineMethod.RL else "true"
    return build_examples(data, encoder, forget_target=target, seed=cfg.seed, include_retain=cfg.method.uses_retain)


def train_weights(job: TrainJob, objective: Objective, examples: Callable[[UnlearningData, TaskEncoder, Any], list],
                  *, dataset: Callable[[list], Any] = AnswerDataset, collator: Callable[[int], Any] = AnswerCollator,
                  needs_reference: bool = False, prepare_model: Callable[[Any, Any], Any] | None = None,
                  extra_meta: dict[str, Any] | None = None) -> Path:
    """Train a weight-changing method from ``job.base`` with ``objective``; save the artifact in ``job.artifact_dir``.

    ``examples(data, encoder, config)`` builds the training rows; ``dataset``/``collator`` wrap them (methods
    that need more per row pass their own); ``needs_reference``: under full tuning keep a frozen copy.
    """
    from transformers import TrainingArguments

    cfg: WeightConfig = job.config
    name = str(getattr(cfg.method, "value", cfg.method))
    refuse_fsdp_launch(f"the {name} method")
    model, tokenizer = job.model_and_tokenizer or load_model(job.model)
    fingerprint = weights_fingerprint(model)
    encoder = TaskEncoder(job.task, tokenizer, job.model.max_length)
    rows = examples(job.data, encoder, cfg)
    ref_model = None
    if cfg.tuning is Tuning.LORA:
        model = add_lora(model, cfg, cfg.section)
    else:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False) if needs_reference else None
        model.requires_grad_(True)
    if prepare_model is not None:
        prepare_model(model, cfg)
    device = resolve_device(job.model.device)
    kwargs = cfg.trainer_kwargs(str(Path(job.work_dir) / "checkpoints"), device.type)
    kwargs["save_strategy"] = "no"  # one short run; the experiment runner resumes per cell
    trainer = WeightTrainer(model=model, args=TrainingArguments(**kwargs), train_dataset=dataset(rows),
                            data_collator=collator(tokenizer.pad_token_id), objective=objective, config=cfg, ref_model=ref_model,
                            callbacks=job.callbacks)
    started = time.time()
    result = trainer.train()
    seconds = time.time() - started
    model.eval()
    meta: dict[str, Any] = {
        "method": name,
        "tuning": cfg.tuning.value,
        **base_model_record(job.base, job.pretrained_model, job.familiarized_dir),
        "base_fingerprint": fingerprint,
        "task": to_dict(job.task.config),
        "max_length": job.model.max_length,
        "hyperparameters": to_dict(cfg),
        "data": {"source": job.data.source, "sizes": job.data.sizes(), "fingerprints": job.data.fingerprints()},
        "trainable_parameters": count_trainable(model),
        "training": {"seconds": round(seconds, 2), "steps": trainer.state.global_step, "final_loss": round(float(result.training_loss), 5)},
        **(extra_meta or {}),
    }
    folder = save_artifact(model, job.artifact_dir, meta)
    if cfg.tuning is Tuning.FULL:
        tokenizer.save_pretrained(folder)
    if cfg.tuning is Tuning.LORA and job.model_and_tokenizer is not None:
        model.unload()  # the caller's model goes back to its own modules (the weights were never changed)
    return folder


def load_weights(folder: Path, model, *, tokenizer=None, meta: dict[str, Any], name: str):
    """A weight-changing artifact as an intervention: ``LoraDelta`` (LoRA) or ``WeightSwap`` (full tuning)."""
    common = common_info(folder, meta)
    if meta.get("tuning") != Tuning.FULL.value:
        return LoraDelta.from_peft_folder(name, folder, **common)
    from safetensors.torch import load_file

    from spul.models.forward import unwrap

    params = dict(unwrap(model).named_parameters())
    tensors: dict[str, torch.Tensor] = {}
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ArtifactError(f"full-tuning artifact {str(folder)!r} holds no weights", "re-train it")
    for f in files:
        for key, value in load_file(str(f)).items():
            if key in params and params[key].shape == value.shape:
                tensors[key] = value.to(device=params[key].device, dtype=params[key].dtype)
    missing = [n for n in params if n not in tensors]
    for n in missing:  # tied weights are saved once: share the tensor the tie points to
        tensors[n] = params[n].data.clone()
    return WeightSwap(name, tensors, **common)


def train_baseline(model_cfg: ModelConfig, task: Task, data: UnlearningData, cfg: BaselineConfig, output_dir: str | Path,
                   base: str | None = None) -> Path:
    """Train one baseline from ``base`` (default ``model_cfg.name_or_path``); save ``output_dir/artifact``."""
    from spul.methods.registry import get_method

    output_dir = Path(output_dir)
    fields = to_dict(model_cfg)
    fields["name_or_path"] = base or model_cfg.name_or_path
    job = TrainJob(model=ModelConfig(**fields), task=task, data=data, config=cfg, artifact_dir=output_dir / "artifact",
                   work_dir=output_dir, pretrained_model=model_cfg.name_or_path)
    return get_method(cfg.method.value).train(job)


def load_baseline(model_cfg: ModelConfig, folder: str | Path):
    """``(model, tokenizer, metadata)`` of a baseline artifact as a PEFT model (or full model), checked against its base."""
    from peft import PeftModel

    from spul.artifacts import check_base, read_metadata

    meta = read_metadata(folder)
    fields = to_dict(model_cfg)
    if meta.get("tuning") == Tuning.FULL.value:
        fields["name_or_path"] = str(folder)
        model, tokenizer = load_model(ModelConfig(**fields))
        return model, tokenizer, meta
    fields["name_or_path"] = meta["base_model"]
    model, tokenizer = load_model(ModelConfig(**fields))
    check_base(meta, weights_fingerprint(model), meta["base_model"])
    try:
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, OSError, RuntimeError, KeyError) as err:
        raise ArtifactError(f"baseline artifact {str(folder)!r} could not be loaded ({str(err).splitlines()[0][:150]})", "re-train it") from None
    peft_model.eval()
    return peft_model, tokenizer, meta
