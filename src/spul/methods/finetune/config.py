"""LoRA settings for the familiarisation fine-tune (paper: r=16, alpha=64, dropout 0.1 on q/v, lr 1e-4)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from spul.methods.config import TrainConfig
from spul.models.lora import check_lora_settings


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
        check_lora_settings(self, "finetune")
