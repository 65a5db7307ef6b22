"""The paper's metrics: accuracy and weighted F1 against the original labels, a generic answer being wrong."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import f1_score

from spul.data.splits import Split

GENERIC = -1


@dataclass
class SplitMetrics:
    accuracy: float
    f1_weighted: float
    generic_rate: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def split_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> SplitMetrics:
    """``predictions`` index task labels (< num_labels) or generic labels (≥ num_labels)."""
    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    if len(labels) == 0:
        return SplitMetrics(float("nan"), float("nan"), float("nan"), 0)
    generic = predictions >= num_labels
    pred = np.where(generic, GENERIC, predictions)
    # Weighted over the true classes only: the generic "class" has no support, so it lowers recall of the
    # classes whose rows it answered without adding a class of its own to the average.
    f1 = f1_score(labels, pred, labels=sorted(set(labels.tolist())), average="weighted", zero_division=0)
    return SplitMetrics(
        accuracy=float((pred == labels).mean()),
        f1_weighted=float(f1),
        generic_rate=float(generic.mean()),
        n=int(len(labels)),
    )


def flag_rates(flags: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of classifier-flagged rows per split: FNR = 1 − rate on forget splits, FPR = rate on retain splits."""
    out: dict[str, float] = {}
    for s, f in flags.items():
        rate = float(np.mean(f)) if len(f) else 0.0
        out[f"{s}_{'fnr' if Split(s).is_forget else 'fpr'}"] = round(1 - rate if Split(s).is_forget else rate, 4)
    return out
