"""Zeroth-order search of the corruption strength σ (no gradients through the model are needed).

In log space u = log σ: g = (f(e^{u+ε}) − f(e^{u−ε})) / 2ε, u ← u − lr·g, clipped to [σ_min, σ_max]. The
objective is deterministic in σ because the noise stream restarts for every evaluation (common random
numbers), so finite differences measure σ's effect and not a fresh draw. The best σ seen is returned.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from spul.data.encoding import TaskEncoder
from spul.models.scoring import Scores, score_prompts
from spul.methods.eco.config import CorruptionConfig, ObjectiveTarget, SearchConfig
from spul.methods.eco.corruptions import Corruption
from spul.methods.eco.hooks import EmbeddingGuard

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    sigma: float
    objective: float
    log: list[dict[str, Any]] = field(default_factory=list)


def zo_minimize(f: Callable[[float], float], sigma0: float, cfg: SearchConfig,
                on_step: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Minimise ``f(σ)`` by central finite differences in log σ; returns the best σ evaluated."""
    lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
    u = min(max(math.log(sigma0), lo), hi)
    fu = f(math.exp(u))
    best = SearchResult(math.exp(u), fu)
    best.log.append({"step": 0, "sigma": math.exp(u), "objective": fu})
    for step in range(1, cfg.steps + 1):
        if fu <= cfg.tolerance:
            break
        f_plus, f_minus = f(math.exp(min(u + cfg.epsilon, hi))), f(math.exp(max(u - cfg.epsilon, lo)))
        g = (f_plus - f_minus) / (2 * cfg.epsilon)
        for s, v in ((u + cfg.epsilon, f_plus), (u - cfg.epsilon, f_minus)):
            if v < best.objective:
                best.sigma, best.objective = math.exp(min(max(s, lo), hi)), v
        u = min(max(u - cfg.learning_rate * g, lo), hi)
        fu = f(math.exp(u))
        if fu < best.objective:
            best.sigma, best.objective = math.exp(u), fu
        entry = {"step": step, "gradient": g, "f_plus": f_plus, "f_minus": f_minus, "sigma": math.exp(u), "objective": fu,
                 "best_sigma": best.sigma, "best_objective": best.objective}
        best.log.append(entry)
        if on_step:
            on_step(entry)
    return best


def target_metric(scores: Scores, labels: np.ndarray, target: ObjectiveTarget) -> tuple[float, float]:
    """``(m, target value)``: the smooth forget-accuracy proxy and where it should go (see ObjectiveTarget)."""
    labels = np.asarray(labels, dtype=int)
    if target is ObjectiveTarget.CHANCE:
        p = scores.label_probabilities()
        return float(p[np.arange(len(labels)), labels].mean()), 1.0 / scores.num_labels
    x = scores.loglik - scores.loglik.max(axis=1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    return float(p[np.arange(len(labels)), labels].mean()), 0.0


def search_sigma(model, encoder: TaskEncoder, texts: list[str], labels: np.ndarray, corruption_cfg: CorruptionConfig,
                 cfg: SearchConfig, pad_token_id: int | None = None) -> SearchResult:
    """Tune σ on forget texts, corrupting every row (the classifier is assumed right on the forget set)."""
    prompts = encoder.encode_prompts(list(texts))
    lengths = np.asarray([len(p) for p in prompts])
    labels = np.asarray(labels, dtype=int)

    def f(sigma: float) -> float:
        guard = EmbeddingGuard(Corruption(corruption_cfg, sigma), pad_token_id)
        with guard.attached(model):
            def provider(n, rows):
                guard.set_batch(np.ones(len(rows), dtype=bool), lengths[rows])
                return None, None

            scores = score_prompts(model, encoder, prompts, batch_size=cfg.batch_size, prompt_provider=provider)
        m, t = target_metric(scores, labels, cfg.target)
        acc = float(((scores.predictions == labels)).mean())
        calls.append({"sigma": sigma, "metric": m, "accuracy": acc, "objective": abs(m - t), "seconds": round(time.time() - started, 1)})
        log.info("σ=%.4g: m=%.4f (target %.3f) accuracy=%.3f", sigma, m, t, acc)
        return abs(m - t)

    calls: list[dict[str, Any]] = []
    started = time.time()
    result = zo_minimize(f, corruption_cfg.sigma, cfg)
    result.log.append({"evaluations": calls})
    return result
