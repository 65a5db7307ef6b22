"""LoRA settings for the familiarisation fine-tune (paper: r=16, alpha=64, dropout 0.1 on q/v, lr 1e-4)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from spul.errors import ConfigError
from spul.methods.config import TrainConfig


class Quantization(str, enum.Enum):
    AUTO = "auto"  # 4-bit NF4 (QLoRA) when CUDA and bitsandbytes are available, else none
    NONE = "none"
    NF4 = "nf4"


@dataclass
class FinetuneConfig(TrainConfig):
    enabled: bool = True
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    quantization: Quantization = Quantization.AUTO
    # merge the adapter into the weights (a plain model folder) or keep base + adapter
    merge: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.quantization = Quantization(self.quantization)
        if self.lora_r < 1:
            raise ConfigError(f"finetune.lora_r={self.lora_r} is invalid", "use a positive rank such as 16")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"finetune.lora_dropout={self.lora_dropout} is invalid", "use a value in [0, 1)")
        if not self.target_modules:
            raise ConfigError("finetune.target_modules is empty", "name the modules to adapt, e.g. [q_proj, v_proj]")
