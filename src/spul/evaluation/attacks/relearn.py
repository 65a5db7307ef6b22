"""Relearning: how quickly does forgotten knowledge come back?

For methods that change weights (the baselines), fine-tune the unlearned weights on a few forget rows with
their true labels and count the steps until forget accuracy is back. For inference-time methods (SPUL, ECO)
the weights never changed: dropping the prompt (or the guard) restores the old behaviour in zero steps,
which the audit measures directly as the base model's forget accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from spul.data.encoding import TaskEncoder
from spul.evaluation.evaluate import score_with
from spul.interventions import Intervention
from spul.models.scoring import score_texts
from spul.methods.losses import answer_positions, per_row_mean, token_nll
from spul.methods.training import AnswerCollator
from spul.models.forward import hidden_states, lm_logits


def accuracy(model, encoder: TaskEncoder, texts: list[str], labels: np.ndarray, batch_size: int = 16, provider=None) -> float:
    """Accuracy with ``provider`` applied: an ``Intervention``, a prompt-provider callback, or None."""
    if isinstance(provider, Intervention):
        scores = score_with(model, encoder, texts, provider, batch_size=batch_size)
    else:
        scores = score_texts(model, encoder, texts, batch_size=batch_size, prompt_provider=provider)
    return float((scores.predictions == labels).mean())


def relearn_steps(model, encoder: TaskEncoder, train: tuple[list[str], np.ndarray], probe: tuple[list[str], np.ndarray],
                  target_accuracy: float, max_steps: int = 20, learning_rate: float = 1e-4, batch_size: int = 16,
                  seed: int = 0, intervention: Intervention | None = None) -> dict:
    """Full-batch fine-tuning on ``train`` of the weight change ``intervention`` applies (its
    ``trainable_parameters``), or without one of the model's LoRA weights if present, else all of them; forget
    accuracy on ``probe`` after every step. Returns the curve and the first step reaching the target.
    Fine-tuning an intervention changes that intervention's tensors (never the shared frozen weights)."""
    if intervention is not None:
        with intervention.applied(model, [], []) as hook:
            if hook is not None:
                hook(np.arange(0))
            return _relearn(model, encoder, train, probe, target_accuracy, max_steps, learning_rate, batch_size, seed,
                            intervention.trainable_parameters(model))
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    if not params:
        params = list(model.parameters())
    return _relearn(model, encoder, train, probe, target_accuracy, max_steps, learning_rate, batch_size, seed, params)


def _relearn(model, encoder, train, probe, target_accuracy, max_steps, learning_rate, batch_size, seed, params) -> dict:
    torch.manual_seed(seed)
    if not params:
        raise ValueError("nothing to fine-tune: the intervention changes no weights")
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    prompts = encoder.encode_prompts(train[0])
    rows = [{"input_ids": p + encoder.label_ids[int(y)][:-1], "target_ids": encoder.label_ids[int(y)], "label": int(y), "is_forget": True}
            for p, y in zip(prompts, train[1])]
    batch = AnswerCollator(encoder.tokenizer.pad_token_id)(rows)
    device = next(model.parameters()).device
    curve = [accuracy(model, encoder, probe[0], probe[1], batch_size)]
    reached = 0 if curve[0] >= target_accuracy else None
    for step in range(1, max_steps + 1):
        if reached is not None:
            break
        model.train()
        hidden = hidden_states(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        h, targets, which = answer_positions(hidden, batch["labels"].to(device))
        loss = per_row_mean(token_nll(lm_logits(model, h), targets), which, len(rows)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.eval()
        curve.append(accuracy(model, encoder, probe[0], probe[1], batch_size))
        if curve[-1] >= target_accuracy:
            reached = step
    for p in params:
        p.requires_grad_(False)
    return {"target_accuracy": round(target_accuracy, 4), "steps_to_target": reached, "max_steps": max_steps,
            "accuracy_curve": [round(a, 4) for a in curve], "samples": len(rows), "learning_rate": learning_rate}
