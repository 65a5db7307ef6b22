"""The baselines as one ``AnswerTrainer`` subclass, plus train/load helpers that save them as artifacts.

Unlike SPUL these change the model's weights, so an artifact is a LoRA adapter (``tuning=lora``) or a whole
model folder (``tuning=full``), each with ``spul.json`` naming the base model it was trained from.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch

from spul.data.encoding import TaskEncoder
from spul.data.splits import UnlearningData
from spul.data.tasks import Task
from spul.errors import ArtifactError
from spul.methods.baselines.config import BaselineConfig, BaselineMethod, Tuning
from spul.methods.losses import baseline_loss, kl_base_to_prompted, per_row_mean
from spul.methods.sharding import refuse_fsdp_launch
from spul.methods.training import AnswerCollator, AnswerDataset, AnswerTrainer, build_examples
from spul.models.forward import hidden_states, lm_logits
from spul.models.loading import ModelConfig, load_model, portable_model_ref, resolve_device, weights_fingerprint
from spul.models.lora import add_lora
from spul.models.soft_prompt import count_trainable

log = logging.getLogger(__name__)


class BaselineTrainer(AnswerTrainer):
    """GA / RL / GA+KL / GA+GD over the answer positions (losses in ``spul.methods.losses.baseline_loss``).

    The KL reference: with LoRA, the same model with its adapter disabled (no second copy); with full
    fine-tuning, ``ref_model``, a frozen copy made before training (twice the weight memory).
    """

    frozen_trunk_in_eval_mode = False

    def __init__(self, *args, baseline: BaselineConfig, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.baseline = baseline
        self.ref_model = ref_model

    def _reference_logits(self, model, inputs: dict[str, torch.Tensor], retain: torch.Tensor) -> torch.Tensor:
        """The frozen reference's answer logits on the retain rows, each row's hidden states computed once."""

        def compute(ids, mask):
            if self.ref_model is not None:
                return hidden_states(self.ref_model, ids, mask)
            with model.disable_adapter():
                return hidden_states(model, ids, mask)

        hidden = self.reference_answer_hidden(inputs, retain, compute, cache=True)
        with torch.no_grad():
            if self.ref_model is not None:
                return lm_logits(self.ref_model, hidden)
            with model.disable_adapter():  # the head too may carry LoRA weights
                return lm_logits(model, hidden)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cfg = self.baseline
        row_nll, logits, rows = self.answer_nll(model, inputs, with_hidden=True)
        retain = ~inputs["is_forget"]
        row_kl = None
        if cfg.method is BaselineMethod.GA_KL and bool(retain.any()):
            base_logits = self._reference_logits(model, inputs, retain)
            retain_tokens = retain[rows]
            token_kl = kl_base_to_prompted(logits[retain_tokens], base_logits)
            row_kl = per_row_mean(token_kl, rows[retain_tokens], row_nll.shape[0])
        parts = baseline_loss(cfg.method.value, row_nll, inputs["is_forget"], row_kl, cfg.retain_weight, cfg.kl_weight, cfg.nll_cap)
        self.record(total=parts.total, forget=parts.forget, retain=parts.retain, kl=parts.kl)
        return (parts.total, {"row_nll": row_nll}) if return_outputs else parts.total


def baseline_examples(data: UnlearningData, encoder: TaskEncoder, cfg: BaselineConfig):
    """GA and RL see forget rows only; GA+KL and GA+GD also retain rows. RL's forget targets are generic labels."""
    target = "generic" if cfg.method is BaselineMethod.RL else "true"
    return build_examples(data, encoder, forget_target=target, seed=cfg.seed, include_retain=cfg.method.uses_retain)


def _add_lora(model, cfg: BaselineConfig):
    return add_lora(model, cfg, "baseline")


def train_baseline(model_cfg: ModelConfig, task: Task, data: UnlearningData, cfg: BaselineConfig, output_dir: str | Path,
                   base: str | None = None) -> Path:
    """Train one baseline from ``base`` (default ``model_cfg.name_or_path``); save ``output_dir/artifact``."""
    from transformers import TrainingArguments

    from spul.artifacts import save_artifact
    from spul.configuration import to_dict

    refuse_fsdp_launch(f"the {cfg.method.value} baseline")
    output_dir = Path(output_dir)
    base = base or model_cfg.name_or_path
    fields = to_dict(model_cfg)
    fields["name_or_path"] = base
    model, tokenizer = load_model(ModelConfig(**fields))
    fingerprint = weights_fingerprint(model)
    encoder = TaskEncoder(task, tokenizer, model_cfg.max_length)
    examples = baseline_examples(data, encoder, cfg)
    ref_model = None
    if cfg.tuning is Tuning.LORA:
        model = _add_lora(model, cfg)
    else:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.method is BaselineMethod.GA_KL else None
        model.requires_grad_(True)
    device = resolve_device(model_cfg.device)
    kwargs = cfg.trainer_kwargs(str(output_dir / "checkpoints"), device.type)
    kwargs["save_strategy"] = "no"  # a baseline is one short run; the experiment runner resumes per cell
    trainer = BaselineTrainer(model=model, args=TrainingArguments(**kwargs), train_dataset=AnswerDataset(examples),
                              data_collator=AnswerCollator(tokenizer.pad_token_id), baseline=cfg, ref_model=ref_model)
    started = time.time()
    result = trainer.train()
    seconds = time.time() - started
    model.eval()
    meta: dict[str, Any] = {
        "method": cfg.method.value,
        "tuning": cfg.tuning.value,
        "base_model": portable_model_ref(base),
        "base_fingerprint": fingerprint,
        "task": to_dict(task.config),
        "max_length": model_cfg.max_length,
        "hyperparameters": to_dict(cfg),
        "data": {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints()},
        "trainable_parameters": count_trainable(model),
        "training": {"seconds": round(seconds, 2), "steps": trainer.state.global_step, "final_loss": round(float(result.training_loss), 5)},
    }
    folder = save_artifact(model, output_dir / "artifact", meta)
    if cfg.tuning is Tuning.FULL:
        tokenizer.save_pretrained(folder)
    return folder


def load_baseline(model_cfg: ModelConfig, folder: str | Path):
    """``(model, tokenizer, metadata)`` of a baseline artifact, checked against its base model."""
    from peft import PeftModel

    from spul.artifacts import check_base, read_metadata
    from spul.configuration import to_dict

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
