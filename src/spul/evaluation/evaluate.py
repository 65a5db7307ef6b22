"""Evaluate a model, optionally with an intervention applied (``spul.interventions``), on the four splits, with
per-example caching. Evaluation never asks which method made the intervention."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spul.data.encoding import TaskEncoder
from spul.data.splits import Split, UnlearningData
from spul.evaluation.config import EvalConfig
from spul.evaluation.metrics import SplitMetrics, flag_rates, split_metrics
from spul.interventions import Intervention, as_provider
from spul.models.scoring import PromptProvider, Scores, score_prompts
from spul.io import sha256_text, write_json


@dataclass
class ModelResult:
    """One row of the paper's table: a model (or model + artifact) measured on each split."""

    name: str
    metrics: dict[str, SplitMetrics]
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metrics": {k: v.as_dict() for k, v in self.metrics.items()}, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelResult":
        return cls(d["name"], {k: SplitMetrics(**v) for k, v in d["metrics"].items()}, d.get("info", {}))


def evaluate_model(model, encoder: TaskEncoder, data: UnlearningData, cfg: EvalConfig, *, name: str,
                   identity: str, intervention: Intervention | None = None, prompt_provider: PromptProvider | None = None,
                   cache_dir: str | Path | None = None, predictions_dir: str | Path | None = None) -> ModelResult:
    """Score each split with ``intervention`` applied (None: the model as it is); cache per-example
    log-likelihoods under ``identity`` (model + artifact fingerprint).

    Each split is one application of the intervention: a classifier gate flags that split's rows, and a
    corruption's noise stream restarts, so a split's result never depends on which splits ran before it.
    ``prompt_provider`` is the low-level alternative (a callback of ``score_prompts``).
    """
    metrics: dict[str, SplitMetrics] = {}
    flags: dict[str, np.ndarray] = {}
    for split_name in cfg.splits:
        split = Split(split_name)
        df = data[split]
        texts = df["text"].tolist()
        if intervention is not None:
            gate = intervention.flags(texts)
            if gate is not None:
                flags[split.value] = gate
        scores = _cached_scores(model, encoder, texts, cfg, intervention, prompt_provider, identity, split, data, cache_dir)
        labels = df["label"].to_numpy()
        metrics[split.value] = split_metrics(labels, scores.predictions, encoder.task.num_labels)
        if predictions_dir is not None:
            _write_predictions(Path(predictions_dir) / f"{_slug(name)}_{split.value}.jsonl", df, scores, encoder)
    result = ModelResult(name=name, metrics=metrics)
    if flags:
        result.info["flags"] = flag_rates(flags)
    return result


def _cached_scores(model, encoder, texts, cfg, intervention, provider, identity, split, data, cache_dir) -> Scores:
    key = sha256_text(identity, data.fingerprints()[split.value], encoder.task.config.template,
                      json.dumps(encoder.candidate_ids), str(encoder.max_length))[:24]
    path = Path(cache_dir) / f"{key}.json" if (cache_dir and cfg.cache) else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            loglik = np.asarray(cached["loglik"], dtype=np.float64)
            if loglik.shape == (len(texts), len(encoder.candidate_ids)):
                return Scores(loglik, encoder.task.num_labels)
        except (ValueError, KeyError):
            pass  # a damaged cache entry is recomputed
    scores = score_with(model, encoder, texts, intervention, batch_size=cfg.batch_size, prompt_provider=provider,
                        progress=cfg.progress, desc=f"evaluate {split.value}")
    if path is not None:
        write_json(path, {"identity": identity, "split": split.value, "loglik": scores.loglik.tolist()})
    return scores


def score_with(model, encoder: TaskEncoder, texts: list[str], intervention: Intervention | None = None, *,
               prompt_provider: PromptProvider | None = None, **kwargs) -> Scores:
    """``score_prompts`` of ``texts`` with ``intervention`` applied to this group of texts."""
    prompts = encoder.encode_prompts(texts)
    if intervention is None:
        return score_prompts(model, encoder, prompts, prompt_provider=prompt_provider, **kwargs)
    with intervention.applied(model, texts, prompts) as hook:
        return score_prompts(model, encoder, prompts, prompt_provider=as_provider(intervention, hook), **kwargs)


def _write_predictions(path: Path, df, scores: Scores, encoder: TaskEncoder) -> None:
    from spul.io import write_text

    cands = encoder.task.candidates
    lines = []
    for i, (text, label) in enumerate(zip(df["text"], df["label"])):
        pred = int(scores.predictions[i])
        lines.append(json.dumps({"i": i, "label": cands[int(label)], "prediction": cands[pred], "correct": pred == int(label),
                                 "loglik": {c: round(float(v), 4) for c, v in zip(cands, scores.loglik[i])}, "text": text}))
    write_text(path, "\n".join(lines) + "\n")


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^0-9a-zA-Z-]+", "_", name).strip("_").lower() or "model"
