"""Evaluate a model, optionally with an intervention applied (``spul.interventions``), on the four splits, with
per-example caching. Evaluation never asks which method made the intervention.

Launched as several processes (``torchrun --nproc_per_node N -m spul.interfaces.cli evaluate ...``), each
process scores every N-th batch of each split's length-sorted batches (the same batches one process forms, so
every row's scores are bitwise what one process computes), the scores are gathered into row order, and rank 0
alone writes the cache, predictions and report. Interventions with a noise stream (``batch_invariant`` False)
are scored whole by rank 0, since splitting their batches would change the noise.
"""

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
from spul.methods.distributed import all_gather_objects, broadcast_object, rank, world_size
from spul.models.scoring import PromptProvider, Scores, length_batches, score_prompts
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
        if predictions_dir is not None and rank() == 0:
            _write_predictions(Path(predictions_dir) / f"{_slug(name)}_{split.value}.jsonl", df, scores, encoder)
    result = ModelResult(name=name, metrics=metrics)
    if flags:
        result.info["flags"] = flag_rates(flags)
    return result


def _cached_scores(model, encoder, texts, cfg, intervention, provider, identity, split, data, cache_dir) -> Scores:
    key = sha256_text(identity, data.fingerprints()[split.value], encoder.task.config.template,
                      json.dumps(encoder.candidate_ids), str(encoder.max_length))[:24]
    path = Path(cache_dir) / f"{key}.json" if (cache_dir and cfg.cache) else None
    processes = world_size()
    # rank 0's cache decides for all (other nodes may not share its disk)
    cached = broadcast_object(_read_cache(path, len(texts), len(encoder.candidate_ids)) if rank() == 0 else None)
    if cached is not None:
        return Scores(cached, encoder.task.num_labels)
    kwargs = dict(batch_size=cfg.batch_size, prompt_provider=provider, progress=cfg.progress and rank() == 0,
                  desc=f"evaluate {split.value}")
    if processes == 1:
        scores = score_with(model, encoder, texts, intervention, **kwargs)
    else:
        scores = _distributed_scores(model, encoder, texts, intervention, processes, **kwargs)
    if path is not None and rank() == 0:
        write_json(path, {"identity": identity, "split": split.value, "loglik": scores.loglik.tolist()})
    return scores


def _read_cache(path: Path | None, rows: int, candidates: int) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        loglik = np.asarray(json.loads(path.read_text())["loglik"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is recomputed
    return loglik if loglik.shape == (rows, candidates) else None


def _distributed_scores(model, encoder, texts, intervention, processes: int, **kwargs) -> Scores:
    """This process's share of the batches, gathered from all processes into row order (on every process)."""
    here = rank()
    prompts = encoder.encode_prompts(texts)
    empty = np.zeros(0, dtype=np.int64)
    if intervention is None or intervention.batch_invariant:
        local = score_with(model, encoder, texts, intervention, prompts=prompts, shard=(here, processes), **kwargs)
        mine = np.concatenate([empty, *length_batches(prompts, kwargs["batch_size"])[here::processes]])
    elif here == 0:  # a noise stream: one process scores the batches in order
        local = score_with(model, encoder, texts, intervention, prompts=prompts, **kwargs)
        mine = np.arange(len(texts))
    else:
        local, mine = None, empty
    loglik = np.zeros((len(texts), len(encoder.candidate_ids)), dtype=np.float64)
    parts = all_gather_objects((mine, loglik[:0] if local is None else local.loglik[mine]))
    seen = np.zeros(len(texts), dtype=np.int64)
    for rows, values in parts:
        loglik[rows] = values
        seen[rows] += 1
    if not (seen == 1).all():  # each row exactly once, or the shards were formed differently on some process
        raise RuntimeError(f"distributed evaluation: {int((seen != 1).sum())} of {len(texts)} rows were not scored exactly once")
    return Scores(loglik, encoder.task.num_labels)


def score_with(model, encoder: TaskEncoder, texts: list[str], intervention: Intervention | None = None, *,
               prompt_provider: PromptProvider | None = None, prompts: list[list[int]] | None = None, **kwargs) -> Scores:
    """``score_prompts`` of ``texts`` (token ids ``prompts``, encoded when not given) with ``intervention``
    applied to this group of texts."""
    prompts = encoder.encode_prompts(texts) if prompts is None else prompts
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
