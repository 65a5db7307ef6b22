"""Generative training: LoRA fine-tunes (familiarised and retain-only reference models) and SPUL soft prompts.

Both reuse the answer-level machinery (``AnswerDataset``, ``AnswerCollator``, ``FinetuneTrainer``, ``SpulTrainer``):
an ``EncodedExample`` of a qa row holds the prompt ids and every answer token (EOS included), so the losses cover
multi-token answers exactly as they cover label words.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from spul.configuration import to_dict
from spul.data.encoding import EncodedExample
from spul.errors import ConfigError
from spul.methods.finetune.config import FinetuneConfig
from spul.methods.spul.config import SpulConfig
from spul.models.config import ModelConfig

log = logging.getLogger(__name__)



def save_merged(model, tokenizer, output_dir: Path) -> tuple[Path, str]:
    """Merge the trained LoRA into the weights and save model + tokenizer to ``output_dir/model``; returns the
    folder and the merged weights' fingerprint."""
    from spul.io import atomic_dir
    from spul.models.loading import weights_fingerprint

    model.eval()
    merged = model.merge_and_unload()
    target = output_dir / "model"
    with atomic_dir(target) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target, weights_fingerprint(merged)

def finetune_generative(model_cfg: ModelConfig, examples: list[EncodedExample], cfg: FinetuneConfig, output_dir: str | Path,
                        resume: bool = True) -> tuple[Path, str]:
    """LoRA fine-tune on ``examples`` (true answers), merged into ``output_dir/model`` (a plain model folder);
    returns the folder and the merged weights' fingerprint."""
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from spul.methods.finetune.trainer import FinetuneTrainer
    from spul.methods.training import AnswerCollator, AnswerDataset
    from spul.models.loading import load_model, resolve_device
    from spul.models.lora import add_lora

    if not examples:
        raise ConfigError("no training examples for the generative fine-tune", "check the data's forget and retain sets")
    output_dir = Path(output_dir)
    device = resolve_device(model_cfg.device)
    model, tokenizer = load_model(model_cfg)
    model = add_lora(model, cfg, "finetune")
    args = TrainingArguments(**cfg.trainer_kwargs(str(output_dir / "checkpoints"), device.type))
    trainer = FinetuneTrainer(model=model, args=args, train_dataset=AnswerDataset(examples),
                              data_collator=AnswerCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id))
    checkpoints = output_dir / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if resume and checkpoints.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    return save_merged(model, tokenizer, output_dir)


def train_spul_generative(model_cfg: ModelConfig, examples: list[EncodedExample], ucfg: SpulConfig, artifact_dir: str | Path,
                          work_dir: str | Path, inputs: dict[str, Any], meta: dict[str, Any], resume: bool = True,
                          model_and_tokenizer: tuple | None = None) -> Path:
    """Train a SPUL soft prompt on generative ``examples`` (forget rows → a refusal, retain rows → their answer; KL to
    the unprompted model over the retain answer tokens) and save it as a ``spul`` artifact (``spul.json`` + adapter).

    ``inputs`` decide the result (its resume key): an artifact made from the same inputs is returned as it is,
    checkpoints of other inputs are refused (``spul.resume``).
    """
    from transformers.trainer_utils import get_last_checkpoint

    from spul import resume as resume_keys
    from spul.artifacts import is_current_artifact, save_artifact
    from spul.methods.spul.method import _forget_wrapper
    from spul.methods.spul.trainer import SpulTrainer
    from spul.methods.training import AnswerCollator, AnswerDataset
    from spul.models.loading import load_model, resolve_device
    from spul.models.soft_prompt import add_soft_prompt, count_trainable

    artifact_dir, work_dir = Path(artifact_dir), Path(work_dir)
    if resume and is_current_artifact(artifact_dir, inputs):
        log.info("generative SPUL artifact is up to date: %s", artifact_dir)
        return artifact_dir
    model, tokenizer = model_and_tokenizer or load_model(model_cfg)
    device = resolve_device(model_cfg.device)
    peft_model = add_soft_prompt(model, ucfg.prompt_encoder, ucfg.prompt_length, ucfg.prompt_init, tokenizer=tokenizer,
                                 init_text=ucfg.prompt_init_text, seed=ucfg.seed, encoder_hidden_size=ucfg.encoder_hidden_size)
    checkpoints = work_dir / "checkpoints"
    args = ucfg.training_arguments(str(checkpoints), device.type)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = SpulTrainer(model=peft_model, args=args, train_dataset=AnswerDataset(examples), data_collator=AnswerCollator(pad))
    resuming = resume_keys.prepare_checkpoints(checkpoints, inputs, resume, "unlearn")
    last = get_last_checkpoint(str(checkpoints)) if resuming and checkpoints.is_dir() else None
    started = time.time()
    result = trainer.train(resume_from_checkpoint=last)
    peft_model.eval()
    record = {
        "method": "spul",
        **meta,
        "hyperparameters": to_dict(ucfg),
        "trainable_parameters": count_trainable(peft_model),
        "training": {"seconds": round(time.time() - started, 1), "steps": trainer.state.global_step, "resumed_from": last,
                     "final_loss": round(float(result.training_loss), 5), "examples": len(examples),
                     "complete": trainer.state.global_step >= trainer.state.max_steps},
        "resume_key": resume_keys.resume_key(inputs),
    }
    try:
        return save_artifact(peft_model, artifact_dir, record)
    finally:
        _forget_wrapper(model)
