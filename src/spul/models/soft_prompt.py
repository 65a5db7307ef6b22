"""Soft prompts: p trainable vectors prepended to the input embeddings of a frozen causal LM.

Stored as a PEFT prompt-learning adapter, so an artifact loads with ``PeftModel.from_pretrained``. Two
parameterisations: plain prompt tuning (the vectors themselves) and P-tuning (vectors produced by a small
MLP, as in the SPUL authors' code). Initialisation draws real vocabulary embeddings, because PEFT's random
init is N(0, 1), several times the scale of typical embeddings, which slows or derails training.
"""

from __future__ import annotations

import torch

from spul.errors import ConfigError
from spul.models.config import PromptEncoder, PromptInit  # noqa: F401 - re-exported
from spul.models.seeding import seeded


def make_prompt_config(
    encoder: PromptEncoder,
    num_virtual_tokens: int,
    base_model_name: str,
    tokenizer_name: str | None = None,
    encoder_hidden_size: int = 128,
):
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, PromptTuningConfig, TaskType

    if num_virtual_tokens < 1:
        raise ConfigError(f"prompt length {num_virtual_tokens} must be at least 1", "set unlearn.prompt_length to e.g. 30")
    if encoder is PromptEncoder.P_TUNING:
        return PromptEncoderConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=num_virtual_tokens,
            encoder_hidden_size=encoder_hidden_size,
            encoder_reparameterization_type=PromptEncoderReparameterizationType.MLP,
            base_model_name_or_path=base_model_name,
        )
    return PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=num_virtual_tokens,
        base_model_name_or_path=base_model_name,
    )


def add_soft_prompt(model, encoder: PromptEncoder, num_virtual_tokens: int, init: PromptInit = PromptInit.VOCAB,
                    tokenizer=None, init_text: str | None = None, seed: int = 0, encoder_hidden_size: int = 128):
    """Wrap ``model`` in a PEFT prompt-learning model; only the prompt's parameters require grad."""
    from peft import get_peft_model

    if PromptEncoder(encoder) is PromptEncoder.PREFIX_TUNING:  # a deep prompt: keys/values per layer (models/deep_prompt.py)
        from spul.models.deep_prompt import add_prefix_prompt

        vectors = None if PromptInit(init) is PromptInit.RANDOM else initial_vectors(model, num_virtual_tokens, PromptInit(init), tokenizer, init_text, seed)
        source = getattr(model, "_spul_source", None)
        return add_prefix_prompt(model, num_virtual_tokens, vectors, seed=seed, base_model_name=str(source or model.config._name_or_path))

    # PEFT's adapter_config.json names the base for plain PEFT users: an absolute folder (a packaged model's
    # cache, a familiarised model or LoRA folder) or a hub id, never a path relative to the current folder
    source = getattr(model, "_spul_source", None)
    if source:
        from spul.models.loading import local_model_path

        name = local_model_path(source) or source
    else:
        name = model.config._name_or_path
    config = make_prompt_config(PromptEncoder(encoder), num_virtual_tokens, name, encoder_hidden_size=encoder_hidden_size)
    with seeded(seed):  # random prompt rows and the P-tuning MLP are drawn here
        peft_model = get_peft_model(model, config)
    embedding = soft_prompt_embedding(peft_model)
    if PromptInit(init) is not PromptInit.RANDOM:
        vectors = initial_vectors(model, num_virtual_tokens, PromptInit(init), tokenizer, init_text, seed)
        with torch.no_grad():
            embedding.weight.copy_(vectors.to(embedding.weight.dtype))
    # Prompt parameters train in fp32 even when the frozen model is bf16: they are tiny, and bf16 steps of
    # lr 1e-4 on O(0.01) values round away.
    peft_model.prompt_encoder.float()
    return peft_model


def soft_prompt_embedding(peft_model) -> torch.nn.Embedding:
    encoder = peft_model.prompt_encoder[peft_model.active_adapter]
    return encoder.embedding


def initial_vectors(model, p: int, init: PromptInit, tokenizer=None, text: str | None = None, seed: int = 0) -> torch.Tensor:
    table = model.get_input_embeddings().weight.detach()
    gen = torch.Generator().manual_seed(seed)
    if init is PromptInit.TEXT:
        if tokenizer is None or not text:
            raise ConfigError("unlearn.prompt_init=text needs unlearn.prompt_init_text", "give an init text or use prompt_init=vocab")
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if not ids:
            raise ConfigError("unlearn.prompt_init_text tokenises to nothing", "give a non-empty init text")
        ids = (ids * (p // len(ids) + 1))[:p]
    else:
        # draw from the first 5000 ids when possible: frequent, well-trained rows (as in Lester et al.)
        high = min(table.shape[0], 5000)
        ids = torch.randint(0, high, (p,), generator=gen).tolist()
    return table[torch.tensor(ids, device=table.device)].float().cpu().clone()


def prompt_vectors(peft_model, batch_size: int, dtype: torch.dtype) -> torch.Tensor:
    """The soft prompt as ``[batch, p, d]`` input embeddings in the frozen model's dtype (differentiable)."""
    prompts = peft_model.get_prompt(batch_size=batch_size)
    return prompts.to(dtype)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
