"""Deep prompts (``unlearn.prompt_encoder: prefix_tuning``) on a tiny real model: PEFT's layout and forward agree
with spul's prefix path; SPUL trains one, saves it, reloads it as ``DeepPrompt`` and it changes the outputs."""

from __future__ import annotations

import json

import torch

from conftest import tiny_run_config


def test_prefix_path_matches_peft_forward(tiny_model_dir):
    from spul.models.deep_prompt import add_prefix_prompt, deep_prefix_applied, flatten_layers, frozen_layers, prefix_layers
    from spul.models.forward import hidden_states, lm_logits
    from spul.models.loading import ModelConfig, load_model

    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    vectors = model.get_input_embeddings().weight[:5].detach().clone()
    peft_model = add_prefix_prompt(model, 5, vectors, seed=0)
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == peft_model.prompt_encoder["default"].embedding.weight.numel()
    layers = frozen_layers(peft_model, model)
    table = peft_model.prompt_encoder["default"].embedding.weight
    assert torch.equal(flatten_layers(peft_model, prefix_layers(peft_model)), table)  # layout round trip
    ids = torch.tensor([tok("a good film", add_special_tokens=False).input_ids])
    mask = torch.ones_like(ids)
    peft_model.eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits[0, -1]
        # the vocabulary-initialised deep prompt equals the plain soft prompt made of the same vectors
        plain = lm_logits(model, hidden_states(model, ids, mask, vectors.unsqueeze(0))[:, -1])[0]
        with deep_prefix_applied(model, layers):
            ours = lm_logits(model, hidden_states(model, ids, mask)[:, -1])[0]
        bare = lm_logits(model, hidden_states(model, ids, mask)[:, -1])[0]
    assert torch.allclose(ours, theirs, atol=1e-4) and torch.allclose(ours, plain, atol=1e-4)
    assert not torch.allclose(ours, bare, atol=1e-3)  # the hook is gone after the block


def test_deep_prompt_spul_trains_saves_reloads_and_changes_outputs(tmp_path, tiny_model_dir):
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task
    from spul.interventions.deep_prompt import DeepPrompt
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model, weights_fingerprint
    from spul.evaluation.evaluate import score_with
    from spul.pipeline import prepare, unlearn

    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False},
                          unlearn={"prompt_encoder": "prefix_tuning", "prompt_length": 4, "num_epochs": 1, "learning_rate": 5e-2})
    data = prepare(cfg)
    artifact = unlearn(cfg, data)
    meta = json.loads((artifact / "spul.json").read_text())
    assert meta["hyperparameters"]["prompt_encoder"] == "prefix_tuning" and meta["training"]["complete"]
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    before = weights_fingerprint(model)
    iv = load_intervention(artifact, model, tokenizer=tok)
    assert isinstance(iv, DeepPrompt) and iv.describe()["prompt_length"] == 4
    enc = TaskEncoder(Task(cfg.task), tok, cfg.model.max_length)
    texts = data["train_forget"]["text"].tolist()[:8]
    with_prompt = score_with(model, enc, texts, iv, batch_size=8)
    without = score_with(model, enc, texts, None, batch_size=8)
    assert not torch.allclose(torch.as_tensor(with_prompt.loglik), torch.as_tensor(without.loglik), atol=1e-3)
    assert weights_fingerprint(model) == before  # frozen weights untouched, nothing left attached
    again = score_with(model, enc, texts, None, batch_size=8)
    assert torch.allclose(torch.as_tensor(again.loglik), torch.as_tensor(without.loglik))
