"""SPUL hyperparameters: the soft prompt's shape and the loss weights α (retain CE) and β (KL)."""

from __future__ import annotations

from dataclasses import dataclass

from spul.errors import ConfigError
from spul.methods.config import TrainConfig
from spul.models.config import PromptEncoder, PromptInit


@dataclass
class SpulConfig(TrainConfig):
    """Defaults follow the paper (p=30, α=β=0.5, lr 1e-4, 10 epochs, batch 32, P-tuning MLP of 128)."""

    prompt_length: int = 30
    prompt_encoder: PromptEncoder = PromptEncoder.P_TUNING
    encoder_hidden_size: int = 128
    prompt_init: PromptInit = PromptInit.VOCAB
    prompt_init_text: str | None = None
    alpha: float = 0.5
    beta: float = 0.5
    # speed, not semantics: both leave the loss unchanged up to float rounding
    shared_prompt_kv: bool = True  # run the prompt once per step and share its keys/values across the batch
    reference_cache: bool = True  # keep each retain row's unprompted answer hidden states after its first visit
    # scale, not semantics: split the frozen weights over the processes of a multi-process launch (FSDP2)
    shard_frozen_weights: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prompt_encoder = PromptEncoder(self.prompt_encoder)
        self.prompt_init = PromptInit(self.prompt_init)
        if not 1 <= self.prompt_length <= 1024:
            raise ConfigError(f"unlearn.prompt_length={self.prompt_length} is out of range", "use 1..1024 (the paper uses 10-50)")
        if self.encoder_hidden_size < 1:
            raise ConfigError(f"unlearn.encoder_hidden_size={self.encoder_hidden_size} is invalid", "use a positive size such as 128")
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"unlearn.{name}={getattr(self, name)} is negative", f"set unlearn.{name} to 0 or more")
        if self.prompt_init is PromptInit.TEXT and not self.prompt_init_text:
            raise ConfigError("unlearn.prompt_init=text but unlearn.prompt_init_text is empty", "give a text or use prompt_init=vocab")

    def training_arguments(self, output_dir: str, device_type: str) -> "SpulArguments":  # noqa: F821
        from spul.methods.spul.arguments import SpulArguments  # transformers loads only when training starts

        return SpulArguments(**self.trainer_kwargs(output_dir, device_type), alpha=self.alpha, beta=self.beta,
                             shared_prompt_kv=self.shared_prompt_kv, reference_cache=self.reference_cache)
