"""Teach the base model the task on all training data, so there is something to unlearn."""

from __future__ import annotations

import logging
from pathlib import Path

from spul.data.encoding import TaskEncoder
from spul.data.splits import UnlearningData
from spul.errors import ConfigError
from spul.methods.finetune.config import FinetuneConfig, Quantization
from spul.methods.losses import masked_mean
from spul.methods.sharding import refuse_fsdp_launch
from spul.methods.training import AnswerCollator, AnswerDataset, AnswerTrainer, build_examples
from spul.models.loading import ModelConfig, load_model, resolve_device
from spul.models.lora import add_lora

log = logging.getLogger(__name__)


class FinetuneTrainer(AnswerTrainer):
    """Cross-entropy on the true label of every row (forget and retain alike)."""

    frozen_trunk_in_eval_mode = False
    phase = "familiarise"

    def batch_loss(self, model, inputs):
        row_nll = self.answer_nll(model, inputs)
        loss = masked_mean(row_nll, inputs["attention_mask"].new_ones(row_nll.shape, dtype=bool))
        self.record(total=loss)
        return loss, {"row_nll": row_nll}


def _quantization_config(cfg: FinetuneConfig, device_type: str):
    want = cfg.quantization
    if want is Quantization.NONE or (want is Quantization.AUTO and device_type != "cuda"):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        if want is Quantization.NF4:
            raise ConfigError("finetune.quantization=nf4 needs bitsandbytes", "pip install bitsandbytes, or set finetune.quantization=none") from None
        return None
    if device_type != "cuda":
        raise ConfigError("finetune.quantization=nf4 needs a CUDA GPU", "set finetune.quantization=none on CPU")
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def familiarize(model_cfg: ModelConfig, encoder_task, data: UnlearningData, cfg: FinetuneConfig, output_dir: str | Path,
                resume: bool = True) -> Path:
    """Fine-tune with LoRA and save the result to ``output_dir/model`` (merged) or ``output_dir/adapter``."""
    from peft import prepare_model_for_kbit_training

    from spul.io import atomic_dir

    refuse_fsdp_launch("the familiarisation fine-tune")
    output_dir = Path(output_dir)
    device = resolve_device(model_cfg.device)
    qconfig = _quantization_config(cfg, device.type)
    model, tokenizer = load_model(model_cfg, quantization_config=qconfig)
    if qconfig is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    model = add_lora(model, cfg, "finetune")
    encoder = TaskEncoder(encoder_task, tokenizer, model_cfg.max_length)
    examples = build_examples(data, encoder, forget_target="true", seed=cfg.seed)
    from transformers import TrainingArguments

    args = TrainingArguments(**cfg.trainer_kwargs(str(output_dir / "checkpoints"), device.type))
    trainer = FinetuneTrainer(model=model, args=args, train_dataset=AnswerDataset(examples), data_collator=AnswerCollator(tokenizer.pad_token_id))
    trainer.train(resume_from_checkpoint=_last_checkpoint(output_dir / "checkpoints") if resume else None)
    model.eval()
    if cfg.merge and qconfig is None:
        # the LoRA adapter too (small), so an artifact can name its base as hub model + adapter, not only a merged copy
        with atomic_dir(output_dir / "adapter") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        target = output_dir / "model"
        merged = model.merge_and_unload()
        with atomic_dir(target) as tmp:
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    else:
        target = output_dir / "adapter"
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return target


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
