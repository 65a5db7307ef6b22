"""ECO on generation: a prompt classifier on forget vs retain questions, and a corruption strength σ chosen so
that the corrupted model answers forget questions as the retain-only model ("never saw them") does.

* classifier: ``methods/eco/classifier.py`` trained on the forget set's questions (positive) against the retain
  set's (negative), its threshold by split conformal prediction as for classification;
* σ: the existing zeroth-order search (``methods/eco/optimize.zo_minimize``) of
  f(σ) = | P̄_forget(σ) − P̄_forget(retain-only) |, where P̄ is the mean length-normalised probability of the
  true answers of (up to ``search.max_rows``) forget questions: every row's prompt embeddings corrupted with σ
  on the familiarised model, against the retain-only model without corruption. The noise stream restarts for
  each σ, so f is deterministic and its finite differences measure σ alone;
* artifact: the same ``spul.json`` as classification ECO (classifier head, corruption, σ, search log), so
  ``load_intervention`` gives ``Gated(EmbeddingCorruption(guard), classifier)``. Its hook corrupts only prompt
  tokens of flagged rows and only in the prefill, so it works inside ``model.generate`` with left padding.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spul.configuration import to_dict
from spul.data.encoding import EncodedExample
from spul.data.generation import GenerationEncoder, collate_answers
from spul.errors import ConfigError

log = logging.getLogger(__name__)


@torch.inference_mode()
def answer_probabilities(model, examples: list[EncodedExample], pad_id: int, batch_size: int = 16, row_hook=None) -> np.ndarray:
    """Each example's length-normalised answer probability exp(−mean token NLL) ``[N]``; ``row_hook(rows)`` is
    called before each batch with its rows' indices (an embedding guard's ``set_batch``)."""
    from spul.methods.losses import answer_positions, per_row_mean, token_nll
    from spul.models.forward import hidden_states, lm_logits

    device = next(model.parameters()).device
    out = np.zeros(len(examples))
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt_ids) + len(examples[i].target_ids))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate_answers([examples[i] for i in rows], pad_id)
        if row_hook is not None:
            row_hook(np.asarray(rows))
        ids = torch.tensor(batch.input_ids, device=device)
        mask = torch.tensor(batch.attention_mask, device=device)
        labels = torch.tensor(batch.labels, device=device)
        h, targets, which = answer_positions(hidden_states(model, ids, mask), labels)
        nll = per_row_mean(token_nll(lm_logits(model, h), targets), which, len(rows))
        out[rows] = torch.exp(-nll).double().cpu().numpy()
    return out


def corrupted_probability(model, examples: list[EncodedExample], pad_id: int, corruption_cfg, sigma: float, batch_size: int = 16) -> float:
    """Mean answer probability with every row's prompt tokens corrupted at strength ``sigma``."""
    from spul.interventions.corruption import Corruption, EmbeddingGuard

    lengths = np.asarray([len(e.prompt_ids) for e in examples])
    guard = EmbeddingGuard(Corruption(corruption_cfg, sigma), pad_id)
    with guard.attached(model):
        probs = answer_probabilities(model, examples, pad_id, batch_size,
                                     row_hook=lambda rows: guard.set_batch(np.ones(len(rows), dtype=bool), lengths[rows]))
    return float(probs.mean())


def train_eco_generative(model, tokenizer, encoder: GenerationEncoder, data, ecfg, reference_model, artifact_dir: str | Path,
                         inputs: dict[str, Any], meta: dict[str, Any], *, resume: bool = True, embedder: Any = None) -> Path:
    """Classifier on forget vs retain questions, σ toward the retain-only ``reference_model``'s forget answer
    probability, artifact in ``artifact_dir`` (reused when ``inputs`` are unchanged). ``reference_model`` may be a
    model, a function that loads it (called only when the search runs) or None. ``embedder`` (texts → vectors)
    overrides the classifier's sentence encoder."""
    from spul import resume as resume_keys
    from spul.artifacts import is_current_artifact, save_artifact
    from spul.interventions.corruption import USES_SIGMA
    from spul.methods.eco.classifier import error_rates, train_classifier
    from spul.methods.eco.optimize import zo_minimize
    from spul.models.loading import weights_fingerprint

    artifact_dir = Path(artifact_dir)
    if resume and is_current_artifact(artifact_dir, inputs):
        log.info("generative ECO artifact is up to date: %s", artifact_dir)
        return artifact_dir
    forget_q = data["forget"]["question"].astype(str).tolist()
    retain_q = data["retain"]["question"].astype(str).tolist()
    started = time.time()
    clf = train_classifier(ecfg.classifier, forget_q, retain_q, embedder=embedder)
    clf_seconds = time.time() - started
    clf.info["train"] = error_rates(clf, forget_q, retain_q)
    sigma = ecfg.corruption.sigma
    search: dict[str, Any] = {"log": []}
    if ecfg.search.enabled and ecfg.search.steps > 0 and ecfg.corruption.name in USES_SIGMA:
        if reference_model is None:
            raise ConfigError("ECO's σ search on generation needs the retain-only reference model",
                              "set retain_only: true, or eco.search.enabled=false with a fixed eco.corruption.sigma")
        if not isinstance(reference_model, torch.nn.Module):
            reference_model = reference_model()
        rows = data["forget"].sample(frac=1.0, random_state=ecfg.corruption.seed).head(ecfg.search.max_rows)
        examples = encoder.encode(rows["question"].astype(str).tolist(), rows["answer"].astype(str).tolist())
        target = float(answer_probabilities(reference_model, examples, encoder.pad_id, ecfg.search.batch_size).mean())
        base_value = float(answer_probabilities(model, examples, encoder.pad_id, ecfg.search.batch_size).mean())
        calls: list[dict[str, Any]] = []

        def f(s: float) -> float:
            value = corrupted_probability(model, examples, encoder.pad_id, ecfg.corruption, s, ecfg.search.batch_size)
            calls.append({"sigma": s, "probability": value, "objective": abs(value - target)})
            log.info("σ=%.4g: forget answer probability %.4f (retain-only %.4f)", s, value, target)
            return abs(value - target)

        t = time.time()
        result = zo_minimize(f, ecfg.corruption.sigma, ecfg.search)
        sigma = result.sigma
        search = {"log": result.log + [{"evaluations": calls}], "metric": "forget answer probability",
                  "retain_only_value": target, "uncorrupted_value": base_value, "objective": result.objective,
                  "seconds": round(time.time() - t, 1), "rows": len(examples)}
    record = {
        "method": "eco",
        **meta,
        "base_fingerprint": weights_fingerprint(model),
        "hyperparameters": to_dict(ecfg),
        "corruption": {**to_dict(ecfg.corruption), "sigma": sigma},
        "classifier": clf.to_dict(),
        "search": search,
        "training": {"classifier_seconds": round(clf_seconds, 1), "search_seconds": search.get("seconds", 0.0), "complete": True},
        "trainable_parameters": len(clf.weights) + 2,
        "resume_key": resume_keys.resume_key(inputs),
    }
    return save_artifact(None, artifact_dir, record)
