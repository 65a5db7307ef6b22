"""Adapters created from the same config start from the same numbers, and the caller's RNG is left alone."""

from __future__ import annotations

import torch


def _load(model_dir):
    from spul.models.loading import ModelConfig, load_model

    return load_model(ModelConfig(name_or_path=str(model_dir), dtype="float32", device="cpu"))


def _adapter_state(model, key: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if key in n}


def test_lora_init_is_seeded(tiny_model_dir):
    from spul.methods.finetune.config import FinetuneConfig
    from spul.models.lora import add_lora

    states = []
    for seed in (0, 0, 1):
        model, _ = _load(tiny_model_dir)
        states.append(_adapter_state(add_lora(model, FinetuneConfig(lora_r=4, seed=seed), "finetune"), "lora_A"))
    assert states[0] and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_soft_prompt_init_is_seeded_and_leaves_global_rng_alone(tiny_model_dir):
    from spul.models.soft_prompt import PromptEncoder, PromptInit, add_soft_prompt

    for encoder, init in ((PromptEncoder.P_TUNING, PromptInit.RANDOM), (PromptEncoder.PROMPT_TUNING, PromptInit.RANDOM)):
        states = []
        for _ in range(2):
            model, _ = _load(tiny_model_dir)
            torch.manual_seed(123)
            before = torch.rand(1)
            torch.manual_seed(123)
            peft_model = add_soft_prompt(model, encoder, 3, init, seed=5)
            assert torch.equal(torch.rand(1), before)  # the global generator continues as if nothing had been drawn
            states.append(_adapter_state(peft_model, "prompt_encoder"))
        assert states[0] and all(torch.equal(states[0][k], states[1][k]) for k in states[0]), encoder
