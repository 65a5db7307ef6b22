"""Training settings shared by every method; each method's config extends ``TrainConfig``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from spul.errors import ConfigError


class Precision(str, enum.Enum):
    AUTO = "auto"  # bf16 autocast on a GPU that supports it, fp32 elsewhere
    FP32 = "fp32"
    BF16 = "bf16"


class Sampling(str, enum.Enum):
    RANDOM = "random"
    GROUP_BY_LENGTH = "group_by_length"  # batches of similar length: less padding, same expected gradient


@dataclass
class TrainConfig:
    learning_rate: float = 1e-4
    num_epochs: float = 10.0
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.001
    max_grad_norm: float = 0.3
    lr_scheduler: str = "cosine"
    max_steps: int = -1
    seed: int = 0
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 10
    precision: Precision = Precision.AUTO
    gradient_checkpointing: bool = False
    sampling: Sampling = Sampling.GROUP_BY_LENGTH
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.precision = Precision(self.precision)
        self.sampling = Sampling(self.sampling)
        checks = [
            ("learning_rate", self.learning_rate > 0, "a positive number such as 1e-4"),
            ("num_epochs", self.num_epochs > 0, "a positive number of epochs"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, "at least 1"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "a ratio in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("max_grad_norm", self.max_grad_norm > 0, "a positive number such as 0.3"),
            ("save_steps", self.save_steps >= 1, "at least 1"),
            ("save_total_limit", self.save_total_limit >= 1, "at least 1"),
            ("logging_steps", self.logging_steps >= 1, "at least 1"),
        ]
        for name, ok, hint in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid", f"set {name} to {hint}")

    def use_bf16(self, device_type: str) -> bool:
        if self.precision is Precision.BF16:
            if device_type == "cpu":
                from spul.models.hardware import warn_slow_cpu_bf16

                warn_slow_cpu_bf16("precision")
            return True
        if self.precision is Precision.AUTO and device_type == "cuda":
            import torch

            return torch.cuda.is_bf16_supported()
        return False

    def trainer_kwargs(self, output_dir: str, device_type: str) -> dict[str, Any]:
        """Keyword arguments for a ``TrainingArguments`` (sub)class."""
        return dict(
            output_dir=output_dir,
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_epochs,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            warmup_steps=self.warmup_ratio,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            lr_scheduler_type=self.lr_scheduler,
            max_steps=self.max_steps,
            seed=self.seed,
            data_seed=self.seed,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            logging_steps=self.logging_steps,
            bf16=self.use_bf16(device_type),
            gradient_checkpointing=self.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if self.gradient_checkpointing else None,
            train_sampling_strategy=self.sampling.value,
            remove_unused_columns=False,
            report_to="none",
            disable_tqdm=not self.progress_bar,
            use_cpu=device_type == "cpu",
            dataloader_num_workers=0,
            save_only_model=False,
        )
