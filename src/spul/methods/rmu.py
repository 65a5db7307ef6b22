"""RMU: representation misdirection. At a middle layer ℓ, forget rows' hidden activations are steered toward a
fixed scaled random direction c·u, while retain rows' activations are kept close to the frozen model's.

Loss: mean over forget tokens of ‖h_ℓ(x) − c·u‖²/d + ``retain_weight`` × mean over retain tokens of
‖h_ℓ(x) − h_ℓ^frozen(x)‖²/d, with u a seeded random unit vector. Only LoRA weights on layers ≤ ℓ train (the
layers after ℓ could not change h_ℓ anyway); the frozen reference is the model with its adapter disabled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from spul.errors import ConfigError, ModelError
from spul.methods.baselines.config import Tuning, WeightConfig
from spul.methods.baselines.trainer import load_weights, train_weights
from spul.methods.losses import LossParts
from spul.methods.npo import examples
from spul.methods.registry import TrainJob, register_method
from spul.models.forward import decoder_of, unwrap


@dataclass
class RmuConfig(WeightConfig):
    method: str = field(default="rmu", metadata={"help": "the registered method these settings are for"})
    layer: int = field(default=-1, metadata={"help": "decoder layer ℓ whose output is steered; -1 = the middle layer"})
    steering_coeff: float = field(default=6.5, metadata={"help": "scale c of the random control vector c·u"})
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj", "up_proj", "down_proj"],
                                      metadata={"help": "modules (on layers ≤ ℓ) that get LoRA weights"})

    section = "rmu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer < -1:
            raise ConfigError(f"rmu.layer={self.layer} is invalid", "use a decoder layer index, or -1 for the middle layer")
        if not self.steering_coeff > 0:
            raise ConfigError(f"rmu.steering_coeff={self.steering_coeff} is invalid", "use a positive scale such as 6.5")
        if self.tuning is not Tuning.LORA:
            raise ConfigError("rmu.tuning=full is not supported", "use rmu.tuning=lora (the frozen reference is the disabled adapter)")

    @property
    def lora_layers(self) -> list[int] | None:
        return list(range(self.layer + 1)) if self.layer >= 0 else None


def control_vector(dim: int, seed: int) -> torch.Tensor:
    """The fixed random unit vector u ``[d]`` (seeded, fp32)."""
    u = torch.randn(dim, generator=torch.Generator(device="cpu").manual_seed(seed))
    return u / u.norm()


def rmu_loss(forget_act: torch.Tensor, target: torch.Tensor, retain_act: torch.Tensor, retain_ref: torch.Tensor,
             retain_weight: float = 1.0) -> LossParts:
    """``forget_act [N_f, d]`` toward ``target [d]`` (= c·u) and ``retain_act [N_r, d]`` toward ``retain_ref``; each
    term a mean squared error over tokens and dimensions (0 when a side has no tokens)."""
    zero = target.new_zeros(()).float()
    forget = ((forget_act.float() - target.float()) ** 2).mean() if forget_act.numel() else zero
    retain = ((retain_act.float() - retain_ref.float()) ** 2).mean() if retain_act.numel() else zero
    return LossParts(total=forget + retain_weight * retain, forget=forget, retain=retain, kl=zero)


class _Stop(Exception):
    pass


def layer_output(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Decoder layer ``layer``'s output ``[B, T, d]``; the forward stops there (later layers never run)."""
    decoder = decoder_of(model)
    layers = getattr(decoder, "layers", None)
    if layers is None or not 0 <= layer < len(layers):
        raise ModelError(f"the model has no decoder layer {layer}", "set rmu.layer to an index below the number of layers, or -1")
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = layers[layer].register_forward_hook(hook)
    try:
        embeds = unwrap(model).get_input_embeddings()(input_ids)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def objective(trainer, model, inputs) -> LossParts:
    cfg = trainer.config
    ids, mask, forget = inputs["input_ids"], inputs["attention_mask"], inputs["is_forget"]
    real = mask.bool()
    act = layer_output(model, ids, mask, cfg.layer)
    target = control_vector(act.shape[-1], cfg.seed).to(act.device) * cfg.steering_coeff
    retain = ~forget
    retain_ref = act.new_zeros((0, act.shape[-1]))
    if bool(retain.any()):
        ref = trainer.reference_forward(model, lambda m: layer_output(m, ids[retain], mask[retain], cfg.layer))
        retain_ref = ref[real[retain]]
    return rmu_loss(act[forget][real[forget]], target, act[retain][real[retain]], retain_ref, cfg.retain_weight)


def train(job: TrainJob):
    from spul.models.loading import load_model

    cfg: RmuConfig = job.config
    model, tokenizer = job.model_and_tokenizer or load_model(job.model)
    if cfg.layer < 0:
        cfg = dataclasses.replace(cfg, layer=int(model.config.num_hidden_layers) // 2)
    job = dataclasses.replace(job, config=cfg, model_and_tokenizer=(model, tokenizer))
    return train_weights(job, objective, examples, extra_meta={"rmu": {"layer": cfg.layer, "steering_coeff": cfg.steering_coeff}})


register_method("rmu", RmuConfig, train, load_weights, lambda meta: "RMU", "steer a middle layer's forget activations to a random direction")
