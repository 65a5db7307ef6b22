"""Settings of the paper's fine-tuning baselines (GA, RL, GA+KL, GA+GD): which loss, which weights train."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from spul.errors import ConfigError
from spul.methods.config import TrainConfig
from spul.models.lora import check_lora_settings


class BaselineMethod(str, enum.Enum):
    GA = "ga"  # gradient ascent on forget rows
    RL = "rl"  # fine-tune forget rows toward random generic labels
    GA_KL = "ga_kl"  # GA on forget + KL(p_base ‖ q) on retain rows
    GA_GD = "ga_gd"  # GA on forget + cross-entropy on retain rows

    @property
    def display(self) -> str:
        return {"ga": "GA", "rl": "RL", "ga_kl": "GA+KL", "ga_gd": "GA+GD"}[self.value]

    @property
    def uses_retain(self) -> bool:
        return self in (BaselineMethod.GA_KL, BaselineMethod.GA_GD)


class Tuning(str, enum.Enum):
    LORA = "lora"  # train a LoRA adapter; the KL reference is the same model with the adapter disabled
    FULL = "full"  # train every weight (the paper's setting); the KL reference is a frozen copy (2× memory)


@dataclass
class BaselineConfig(TrainConfig):
    """Defaults follow the paper's baselines: 1 epoch; the learning rate is searched by the experiment runner."""

    method: BaselineMethod = BaselineMethod.GA_GD
    tuning: Tuning = Tuning.LORA
    learning_rate: float = 1e-4
    num_epochs: float = 1.0
    retain_weight: float = 1.0
    kl_weight: float = 1.0
    # GA is unbounded: a forget row stops contributing gradient once its NLL exceeds this many nats
    nll_cap: float | None = 10.0
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        super().__post_init__()
        self.method = BaselineMethod(self.method)
        self.tuning = Tuning(self.tuning)
        for name in ("retain_weight", "kl_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"baseline.{name}={getattr(self, name)} is negative", f"set baseline.{name} to 0 or more")
        if self.nll_cap is not None and self.nll_cap <= 0:
            raise ConfigError(f"baseline.nll_cap={self.nll_cap} is invalid", "use a positive number of nats (e.g. 10) or null for no cap")
        check_lora_settings(self, "baseline")
