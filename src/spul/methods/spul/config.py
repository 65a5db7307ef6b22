"""SPUL hyperparameters: the soft prompt's shape and the loss weights α (retain CE) and β (KL)."""

from __future__ import annotations

from dataclasses import dataclass, field

from spul.data.attacks import AugmentConfig
from spul.errors import ConfigError
from spul.methods.config import TrainConfig
from spul.models.config import PromptEncoder, PromptInit


@dataclass
class SpulConfig(TrainConfig):
    """Defaults follow the paper (p=30, α=β=0.5, lr 1e-4, 10 epochs, batch 32, P-tuning MLP of 128)."""

    method: str = field(default="spul", metadata={"help": "the registered method these settings are for"})
    prompt_length: int = field(default=30, metadata={"help": "soft prompt tokens p (the paper: 10-50)"})
    prompt_encoder: PromptEncoder = field(default=PromptEncoder.P_TUNING, metadata={"help": "p_tuning (an MLP reparameterisation, as the authors' code), prompt_tuning (plain vectors) or prefix_tuning (a deep prompt: keys/values at every layer, PEFT prefix tuning / P-tuning v2)"})
    encoder_hidden_size: int = field(default=128, metadata={"help": "hidden size of the P-tuning MLP"})
    prompt_init: PromptInit = field(default=PromptInit.VOCAB, metadata={"help": "initialisation of the prompt: vocab (sampled token embeddings), text or random"})
    prompt_init_text: str | None = field(default=None, metadata={"help": "text whose embeddings initialise the prompt (prompt_init=text)"})
    alpha: float = field(default=0.5, metadata={"help": "weight α of the retain cross-entropy L_r"})
    beta: float = field(default=0.5, metadata={"help": "weight β of the KL to the unprompted model on retain rows (SPUL); inverse temperature (NPO, SimNPO, IDK-DPO)"})
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "robust training: rewrite forget and retain rows with the attack suite's training pools (families, fraction, start_epoch); off by default"})
    shared_prompt_kv: bool = field(default=True, metadata={"help": "speed only: run the prompt once per step and share its keys/values across the batch"})
    reference_cache: bool = field(default=True, metadata={"help": "speed only: keep each retain row's unprompted answer hidden states after its first visit"})
    shard_frozen_weights: bool = field(default=False, metadata={"help": "scale only: split the frozen weights over the processes of a multi-process launch (FSDP2)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prompt_encoder = PromptEncoder(self.prompt_encoder)
        self.prompt_init = PromptInit(self.prompt_init)
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
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
