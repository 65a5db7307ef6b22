"""LoRA adapters for the methods that do change weights (familiarisation, fine-tuning baselines)."""

from __future__ import annotations

from typing import Any

from spul.errors import ConfigError, ModelError


def check_lora_settings(cfg: Any, section: str) -> None:
    """Validate ``lora_r``, ``lora_dropout`` and ``target_modules`` of a config section."""
    if cfg.lora_r < 1:
        raise ConfigError(f"{section}.lora_r={cfg.lora_r} is invalid", "use a positive rank such as 16")
    if not 0 <= cfg.lora_dropout < 1:
        raise ConfigError(f"{section}.lora_dropout={cfg.lora_dropout} is invalid", "use a value in [0, 1)")
    if not cfg.target_modules:
        raise ConfigError(f"{section}.target_modules is empty", "name the modules to adapt, e.g. [q_proj, v_proj]")


def add_lora(model, cfg: Any, section: str):
    """Wrap ``model`` with a LoRA adapter on ``cfg.target_modules``, refusing names the model lacks."""
    from peft import LoraConfig, TaskType, get_peft_model

    from spul.models.seeding import seeded

    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ModelError(
            f"model has no module named {missing[0]!r} for LoRA",
            f"set {section}.target_modules to modules the model has (e.g. q_proj, v_proj; c_attn for GPT-2)",
        )
    layers = getattr(cfg, "lora_layers", None)  # only these decoder layers (e.g. RMU: layers up to the steered one)
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), layers_to_transform=list(layers) if layers else None)
    with seeded(cfg.seed):  # the LoRA A matrices are drawn here, before the Trainer seeds anything
        return get_peft_model(model, lora)
