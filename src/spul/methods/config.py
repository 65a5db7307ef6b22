"""Training settings shared by every method; each method's config extends ``TrainConfig``."""

from __future__ import annotations

import enum
import importlib.util
import os
from dataclasses import dataclass, field, fields
from typing import Any

from spul.errors import ConfigError


class Precision(str, enum.Enum):
    AUTO = "auto"  # bf16 autocast on a GPU that supports it, fp32 elsewhere
    FP32 = "fp32"
    BF16 = "bf16"


class Sampling(str, enum.Enum):
    RANDOM = "random"
    GROUP_BY_LENGTH = "group_by_length"  # batches of similar length: less padding, same expected gradient


# report_to value -> the packages that integration needs (any one of them); from spul[track] for the common two
TRACKERS: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",), "comet_ml": ("comet_ml",),
    "clearml": ("clearml",), "dvclive": ("dvclive",), "neptune": ("neptune",), "aim": ("aim",), "trackio": ("trackio",),
    "swanlab": ("swanlab",), "codecarbon": ("codecarbon",), "azure_ml": ("azureml",),
}
TRACKING_FIELDS = ("report_to", "run_name", "logging_dir")


def check_report_to(report_to: list[str]) -> None:
    """Unknown or uninstalled trackers fail at config time, not after the first training steps."""
    for name in report_to:
        if name in ("none", "all"):
            continue
        needs = TRACKERS.get(name)
        if needs is None:
            raise ConfigError(f"report_to has unknown tracker {name!r}", f"use some of: {', '.join(TRACKERS)} (or none)")
        if not any(importlib.util.find_spec(pkg) for pkg in needs):
            raise ConfigError(f"report_to={name} but {needs[0]} is not installed", f"pip install 'spul[track]' (or pip install {needs[0]})")


def tensorboard_dir_kwargs(logging_dir: str | None) -> dict[str, Any]:
    """Where TensorBoard writes: the ``logging_dir`` argument on transformers versions that have it; newer ones
    (which removed it) read TENSORBOARD_LOGGING_DIR, set here right before the Trainer is built."""
    if not logging_dir:
        return {}
    from transformers import TrainingArguments

    if "logging_dir" in {f.name for f in fields(TrainingArguments)}:
        return {"logging_dir": logging_dir}
    os.environ["TENSORBOARD_LOGGING_DIR"] = logging_dir
    return {}


@dataclass
class TrainConfig:
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    num_epochs: float = field(default=10.0, metadata={"help": "epochs over the training rows"})
    batch_size: int = field(default=32, metadata={"help": "rows per device step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "steps whose gradients are summed before an update"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of the steps with a linear warm-up"})
    weight_decay: float = field(default=0.001, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=0.3, metadata={"help": "gradient clipping norm"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name (cosine, linear, constant, ...)"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many steps (-1: run num_epochs)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, data order and generic-label draws"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every this many steps (resume)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    logging_steps: int = field(default=10, metadata={"help": "log the loss parts every this many steps"})
    precision: Precision = field(default=Precision.AUTO, metadata={"help": "auto (bf16 autocast on a capable GPU, else fp32), fp32 or bf16"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass (less memory)"})
    sampling: Sampling = field(default=Sampling.GROUP_BY_LENGTH, metadata={"help": "random, or group_by_length (batches of similar length)"})
    progress_bar: bool = field(default=True, metadata={"help": "show the training progress bar"})
    # experiment tracking, passed to the Trainer (README "Tracking and logs")
    report_to: list[str] = field(default_factory=list, metadata={"help": "trackers for the Trainer, e.g. [tensorboard] or [wandb]; empty: none"})
    run_name: str | None = field(default=None, metadata={"help": "tracking run name (spul run: <output folder>-<phase>)"})
    logging_dir: str | None = field(default=None, metadata={"help": "TensorBoard event folder (spul run: OUTPUT/tensorboard/<phase>)"})

    def __post_init__(self) -> None:
        self.precision = Precision(self.precision)
        if isinstance(self.report_to, str):
            self.report_to = [v.strip() for v in self.report_to.split(",") if v.strip()]
        self.report_to = [v for v in self.report_to if v != "none"]  # [] and [none] both mean no tracking
        check_report_to(self.report_to)
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
            ("max_steps", self.max_steps == -1 or self.max_steps >= 1, "-1 (train num_epochs) or a number of steps >= 1"),
        ]
        for name, ok, hint in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid", f"set {name} to {hint}")
        check_scheduler(self.lr_scheduler)

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
            report_to=list(self.report_to) or "none",
            **({"run_name": self.run_name} if self.run_name else {}),
            **tensorboard_dir_kwargs(self.logging_dir),
            disable_tqdm=not self.progress_bar,
            use_cpu=device_type == "cpu",
            dataloader_num_workers=0,
            save_only_model=False,
        )


# transformers' schedule names (SchedulerType); a name outside this list is checked against transformers itself
KNOWN_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
                    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")


def check_scheduler(name: str) -> None:
    """Refuse a learning-rate schedule transformers does not know (e.g. a typo), naming the valid ones.

    The common names are checked without importing transformers, so a config is validated in well under a second."""
    import difflib

    if name in KNOWN_SCHEDULERS:
        return
    from transformers import SchedulerType

    known = [s.value for s in SchedulerType]
    if name not in known:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"lr_scheduler={name!r} is not a known schedule", f"{hint}use one of: {', '.join(known)}")
