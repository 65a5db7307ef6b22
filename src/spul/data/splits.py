"""The four splits of an unlearning data set, validated once, fingerprinted for artifacts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

from spul.data.config import SPLITS, Split  # noqa: F401 - re-exported
from spul.errors import DataError
from spul.io import sha256_text

log = logging.getLogger(__name__)




@dataclass
class UnlearningData:
    """Four DataFrames with columns ``text`` (str) and ``label`` (int id into the task's label words)."""

    splits: dict[Split, pd.DataFrame]
    source: str = ""
    label_words: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.splits = {Split(k): v for k, v in self.splits.items()}
        self.validate()

    def __getitem__(self, split: Split | str) -> pd.DataFrame:
        return self.splits[Split(split)]

    def __iter__(self) -> Iterator[tuple[Split, pd.DataFrame]]:
        for split in SPLITS:
            yield split, self.splits[split]

    def sizes(self) -> dict[str, int]:
        return {s.value: len(df) for s, df in self}

    def validate(self) -> None:
        missing = [s.value for s in SPLITS if s not in self.splits]
        if missing:
            raise DataError(f"data from {self.source!r} lacks split(s) {missing}", "provide all four splits: train_forget, train_retain, test_forget, test_retain")
        for split, df in self:
            for col in ("text", "label"):
                if col not in df.columns:
                    raise DataError(f"split {split.value} has no '{col}' column", "normalise the data with spul.data.sources")
            if len(df) == 0:
                raise DataError(f"split {split.value} of {self.source!r} is empty", "give it at least one row (check filters and limits)")
        for train_or_test in ("train", "test"):
            forget = set(self[f"{train_or_test}_forget"]["text"])
            retain = set(self[f"{train_or_test}_retain"]["text"])
            both = forget & retain
            if both:
                example = next(iter(both))[:60]
                raise DataError(
                    f"{len(both)} text(s) are in both {train_or_test}_forget and {train_or_test}_retain (e.g. {example!r})",
                    "remove the duplicates from one of the two splits",
                )
        cross = (set(self[Split.TRAIN_FORGET]["text"]) & set(self[Split.TEST_RETAIN]["text"])) | (
            set(self[Split.TEST_FORGET]["text"]) & set(self[Split.TRAIN_RETAIN]["text"])
        )
        if cross:
            raise DataError(
                f"{len(cross)} text(s) are forget rows in one phase and retain rows in the other (e.g. {next(iter(cross))[:60]!r})",
                "a text must be forget or retain everywhere; remove it from one side",
            )

    def overlaps(self) -> dict[str, int]:
        """Rows that are allowed but probably wrong: the same text with different labels inside one split
        (``conflicting_labels.<split>``), and texts in both a train and a test split (``train_test_overlap.<side>``:
        test metrics on them measure memory, not generalisation). Only non-zero counts are listed."""
        found: dict[str, int] = {}
        for split, df in self:
            labels = df.groupby("text")["label"].nunique()
            conflicting = int((labels > 1).sum())
            if conflicting:
                found[f"conflicting_labels.{split.value}"] = conflicting
        for side in ("forget", "retain"):
            shared = len(set(self[f"train_{side}"]["text"]) & set(self[f"test_{side}"]["text"]))
            if shared:
                found[f"train_test_overlap.{side}"] = shared
        return found

    def warn_overlaps(self) -> dict[str, int]:
        """Log one warning per kind of overlap (see ``overlaps``) and return the counts for the manifest."""
        found = self.overlaps()
        for what, n in found.items():
            kind, _, where = what.partition(".")
            if kind == "conflicting_labels":
                log.warning("%d text(s) in %s appear with different labels; keep one label per text (data from %r)", n, where, self.source)
            else:
                log.warning("%d %s text(s) are in both train_%s and test_%s; test metrics on them are not held out (data from %r)",
                            n, where, where, where, self.source)
        return found

    def fingerprints(self) -> dict[str, str]:
        """A content hash per split: same rows in the same order give the same hash."""
        return {
            split.value: sha256_text(*(f"{t}\t{l}" for t, l in zip(df["text"], df["label"])))[:16]
            for split, df in self
        }

    def subsample(self, limits: dict[str, int] | int | None, seed: int = 0) -> "UnlearningData":
        """At most ``limits[split]`` rows per split, drawn reproducibly (stratified by label)."""
        if not limits:
            return self
        if isinstance(limits, int):
            limits = {s.value: limits for s in SPLITS}
        out = {}
        for split, df in self:
            n = limits.get(split.value)
            if n is None or len(df) <= n:
                out[split] = df
                continue
            frac = n / len(df)
            parts = [g.sample(n=max(1, round(len(g) * frac)), random_state=seed) for _, g in df.groupby("label")]
            sampled = pd.concat(parts)
            if len(sampled) > n:
                sampled = sampled.sample(n=n, random_state=seed)
            out[split] = sampled.sort_index().reset_index(drop=True)
        return UnlearningData(out, source=f"{self.source} (subsample)", label_words=self.label_words)

    def label_counts(self) -> dict[str, dict[int, int]]:
        return {s.value: {int(k): int(v) for k, v in df["label"].value_counts().sort_index().items()} for s, df in self}
