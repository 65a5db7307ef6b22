"""Settings of the methods that change weights: what every one shares (``WeightConfig``: LoRA or full tuning,
the retain term) and the paper's four baselines (``BaselineConfig``: GA, RL, GA+KL, GA+GD)."""

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


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class WeightConfig(TrainConfig):
    """What every weight-changing method shares. Defaults: 1 epoch, LoRA r=16/alpha=64 on q_proj, v_proj."""

    method: str = field(default="", metadata=_help("the registered method these settings are for"))
    tuning: Tuning = field(default=Tuning.LORA, metadata=_help("lora: train a LoRA adapter; full: train every weight"))
    learning_rate: float = field(default=1e-4, metadata=_help("peak learning rate (searched by the experiment runner)"))
    num_epochs: float = field(default=1.0, metadata=_help("epochs over the training rows"))
    retain_weight: float = field(default=1.0, metadata=_help("weight of the retain term (cross-entropy or activation match)"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=64, metadata=_help("LoRA alpha (scaling = alpha / r)"))
    lora_dropout: float = field(default=0.0, metadata=_help("LoRA dropout"))
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"], metadata=_help("modules that get LoRA weights"))

    section = "baseline"  # the config section named in error messages

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tuning = Tuning(self.tuning)
        if self.retain_weight < 0:
            raise ConfigError(f"{self.section}.retain_weight={self.retain_weight} is negative", f"set {self.section}.retain_weight to 0 or more")
        check_lora_settings(self, self.section)


@dataclass
class BaselineConfig(WeightConfig):
    """The paper's baselines; the learning rate is searched by the experiment runner."""

    method: BaselineMethod = field(default=BaselineMethod.GA_GD, metadata=_help("ga | rl | ga_kl | ga_gd"))
    kl_weight: float = field(default=1.0, metadata=_help("weight of KL(p_base ‖ q) on retain rows (ga_kl)"))
    # GA is unbounded: a forget row stops contributing gradient once its NLL exceeds this many nats
    nll_cap: float | None = field(default=10.0, metadata=_help("clamp each forget row's NLL at this many nats (null: no cap)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.method = BaselineMethod(self.method)
        if self.kl_weight < 0:
            raise ConfigError(f"baseline.kl_weight={self.kl_weight} is negative", "set baseline.kl_weight to 0 or more")
        if self.nll_cap is not None and self.nll_cap <= 0:
            raise ConfigError(f"baseline.nll_cap={self.nll_cap} is invalid", "use a positive number of nats (e.g. 10) or null for no cap")
