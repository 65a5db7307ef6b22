"""Evaluate guarded models on the four splits, with classifier flags set before every batch.

``score_prompts`` calls its prompt provider once per batch with that batch's row indices, before the forward.
That is exactly where the per-row flag mask has to be set, so the providers here (a) set the guard's mask and
add no prompt (ECO), or (b) return the SPUL soft prompt with ``prompt_rows`` = flags (combined mode: unflagged
rows are exactly unprompted). Each split is evaluated on its own, because flags belong to one split's rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from spul.data.encoding import TaskEncoder
from spul.data.splits import Split, UnlearningData
from spul.evaluation.evaluate import EvalConfig, ModelResult, evaluate_model
from spul.methods.eco.classifier import PromptClassifier
from spul.methods.eco.hooks import EmbeddingGuard


def split_flags(classifier: PromptClassifier, data: UnlearningData, splits: list[str]) -> dict[str, np.ndarray]:
    return {s: classifier.flags(data[Split(s)]["text"].tolist()) for s in splits}


def flag_rates(flags: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of flagged rows per split: FNR = 1 − rate on forget splits, FPR = rate on retain splits."""
    out: dict[str, float] = {}
    for s, f in flags.items():
        rate = float(np.mean(f)) if len(f) else 0.0
        out[f"{s}_{'fnr' if Split(s).is_forget else 'fpr'}"] = round(1 - rate if Split(s).is_forget else rate, 4)
    return out


def _per_split(model, encoder: TaskEncoder, data: UnlearningData, cfg: EvalConfig, name: str, identity: str,
               make_provider, cache_dir, predictions_dir) -> ModelResult:
    metrics = {}
    for s in cfg.splits:
        one = dataclasses.replace(cfg, splits=[s])
        res = evaluate_model(model, encoder, data, one, name=name, identity=identity, prompt_provider=make_provider(s),
                             cache_dir=cache_dir, predictions_dir=predictions_dir)
        metrics.update(res.metrics)
    return ModelResult(name=name, metrics=metrics)


def evaluate_guarded(model, encoder: TaskEncoder, data: UnlearningData, cfg: EvalConfig, guard: EmbeddingGuard,
                     flags: dict[str, np.ndarray], *, name: str, identity: str, cache_dir: str | Path | None = None,
                     predictions_dir: str | Path | None = None) -> ModelResult:
    """ECO: the corruption hook is active; each batch's flagged rows (and only their prompt tokens) are corrupted."""

    def make_provider(split: str):
        lengths = np.asarray([len(p) for p in encoder.encode_prompts(data[Split(split)]["text"].tolist())])
        guard.corruption.reset()  # a split's noise must not depend on which splits were evaluated before it

        def provider(n, rows):
            guard.set_batch(flags[split][rows], lengths[rows])
            return None, None

        return provider

    with guard.attached(model):
        result = _per_split(model, encoder, data, cfg, name, identity, make_provider, cache_dir, predictions_dir)
    result.info = {"flags": flag_rates(flags), "corruption": guard.corruption.params()}
    return result


def evaluate_combined(peft_model, encoder: TaskEncoder, data: UnlearningData, cfg: EvalConfig, flags: dict[str, np.ndarray],
                      *, name: str, identity: str, cache_dir: str | Path | None = None,
                      predictions_dir: str | Path | None = None) -> ModelResult:
    """SPUL soft prompt on classifier-flagged rows only; unflagged rows are scored exactly as by the base model."""
    from spul.models.soft_prompt import prompt_vectors

    dtype = peft_model.get_input_embeddings().weight.dtype

    def make_provider(split: str):
        def provider(n, rows):
            return prompt_vectors(peft_model, n, dtype), torch.as_tensor(np.asarray(flags[split][rows], dtype=bool))

        return provider

    result = _per_split(peft_model, encoder, data, cfg, name, identity, make_provider, cache_dir, predictions_dir)
    result.info = {"flags": flag_rates(flags)}
    return result
