"""Model-layer configuration: which model, in which dtype, and the soft prompt's shape choices.

Kept free of torch/transformers imports so a config file is validated (and a typo answered) before the
heavy libraries load; ``DType.resolve`` imports torch only when a model is actually about to be loaded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from spul.errors import ConfigError

DEFAULT_MODEL = "packaged:smollm2-135m-instruct"


class DType(str, enum.Enum):
    """``auto``: bf16 where the hardware computes it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX),
    fp16 on older CUDA GPUs, fp32 on other CPUs."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"

    def resolve(self, device: Any) -> Any:
        """The ``torch.dtype`` for ``device`` (a ``torch.device``)."""
        import torch

        from spul.models.hardware import cpu_bf16_native, warn_slow_cpu_bf16

        if self is DType.AUTO:
            if device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if device.type == "cpu" and cpu_bf16_native():
                return torch.bfloat16
            return torch.float32
        if self is DType.BFLOAT16 and device.type == "cpu":
            warn_slow_cpu_bf16("model.dtype")
        return {DType.FLOAT32: torch.float32, DType.BFLOAT16: torch.bfloat16, DType.FLOAT16: torch.float16}[self]

    @classmethod
    def of(cls, dtype: Any) -> "DType":
        """The member naming a ``torch.dtype`` (``torch.bfloat16`` → ``DType.BFLOAT16``)."""
        return cls(str(dtype).removeprefix("torch."))


QUANTIZATIONS = ("none", "4bit", "8bit")


@dataclass
class ModelConfig:
    """Which causal LM to load, how, and where."""

    name_or_path: str = DEFAULT_MODEL
    dtype: DType = DType.AUTO
    device: str = "auto"
    # the longest prompt (tokens) fed to the model; longer texts are truncated inside the {text} slot
    max_length: int = 256
    trust_remote_code: bool = False
    revision: str | None = None
    attn_implementation: str | None = None
    # frozen base in 4-bit (NF4) or 8-bit through bitsandbytes, on CUDA only; the soft prompt stays bf16/fp32
    quantization: str = "none"

    def __post_init__(self) -> None:
        self.dtype = DType(self.dtype)
        if str(self.quantization).lower() not in QUANTIZATIONS:
            raise ConfigError(f"model.quantization={self.quantization!r} is not one of {', '.join(QUANTIZATIONS)}",
                              "use model.quantization=4bit, 8bit or none")
        self.quantization = str(self.quantization).lower()
        if not self.name_or_path:
            raise ConfigError("model.name_or_path is empty", f"name a hub model id, a local folder, or {DEFAULT_MODEL}")
        if self.max_length < 16:
            raise ConfigError(f"model.max_length={self.max_length} is too small", "use at least 16 tokens (256 is typical)")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps", "xpu")):
            raise ConfigError(f"model.device={self.device!r} is not a device", "use auto, cpu, cuda or cuda:N")


class PromptEncoder(str, enum.Enum):
    PROMPT_TUNING = "prompt_tuning"
    P_TUNING = "p_tuning"
    PREFIX_TUNING = "prefix_tuning"  # deep prompt: per-layer keys/values (PEFT prefix tuning / P-tuning v2)


class PromptInit(str, enum.Enum):
    VOCAB = "vocab"  # embeddings of randomly drawn vocabulary tokens
    TEXT = "text"  # embeddings of a given text, repeated to length p
    RANDOM = "random"  # PEFT's N(0,1) init, kept for comparison with the authors' setup
