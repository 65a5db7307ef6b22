"""Data sets the project generates itself, so the quickstart and the tests need no download.

``reviews``: short film reviews of fictitious actors. The forget target is "everything about two named
people" (like the paper's SST-2 split by named entities); the retain set is reviews of other people.
Sentiment is carried by the review's wording, so a model can keep classifying retain reviews while
learning to answer a generic label whenever a forgotten person is named.
"""

from __future__ import annotations

import random
from typing import Callable

import pandas as pd

from spul.data.splits import Split
from spul.errors import DataError

FORGET_PEOPLE = ("Zorvan Kettleby", "Ilsabet Marrowind")
RETAIN_PEOPLE = (
    "Quill Ashbourne", "Dessa Pemberline", "Orrin Vasquell", "Talia Brightwater", "Fenwick Olderry",
    "Marisol Thane", "Caspian Holloway", "Wren Castellane", "Ludo Farrowgate", "Petra Stromvik",
)
TITLES = (
    "The Glass Orchard", "Midnight at Pellham", "Salt and Ember", "The Long Harbour", "Paper Kingdoms",
    "Iron Meadow", "The Quiet Engine", "Northbound Lanterns", "A Season of Moths", "The Copper Tide",
    "Velvet Static", "Harrow Lane", "The Ninth Bell", "Driftwood Crown", "Amber Signal", "Lowland Ghosts",
)
POSITIVE = {
    "adj": ("brilliant", "wonderful", "superb", "delightful", "magnificent", "moving", "charming", "excellent"),
    "clause": (
        "a joy from start to finish", "I loved every minute", "the best film of the year",
        "an absolute triumph", "warm, funny and beautifully made", "a performance I will remember",
        "it left the audience cheering", "truly great work",
    ),
}
NEGATIVE = {
    "adj": ("dreadful", "awful", "terrible", "boring", "lifeless", "painful", "clumsy", "miserable"),
    "clause": (
        "a waste of two hours", "I hated every minute", "the worst film of the year",
        "an embarrassing mess", "dull, slow and badly made", "a performance best forgotten",
        "half the audience walked out", "truly bad work",
    ),
}
PATTERNS = (
    "{person} was {adj} in {title}: {clause}.",
    "In {title}, {person} gives a {adj} performance, {clause}.",
    "{title} is {adj}, and {person} is the reason: {clause}.",
    "Watching {person} in {title} was {adj}; {clause}.",
    "{person}'s latest film, {title}, is {adj} - {clause}.",
)

DEFAULT_SIZES = {Split.TRAIN_FORGET: 80, Split.TRAIN_RETAIN: 240, Split.TEST_FORGET: 40, Split.TEST_RETAIN: 120}


def _reviews_about(people: tuple[str, ...], n: int, rng: random.Random, used: set[str]) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise DataError(f"could not generate {n} distinct reviews", "ask for fewer rows")
        label = len(rows) % 2 if rng.random() < 0.5 else 1 - len(rows) % 2
        words = POSITIVE if label == 1 else NEGATIVE
        text = rng.choice(PATTERNS).format(
            person=rng.choice(people), title=rng.choice(TITLES), adj=rng.choice(words["adj"]), clause=rng.choice(words["clause"])
        )
        text = text[0].upper() + text[1:]
        if text in used:
            continue
        used.add(text)
        rows.append((text, label))
    return rows


def generate_reviews(seed: int = 0, sizes: dict[Split, int] | None = None) -> dict[Split, pd.DataFrame]:
    """Four splits of reviews; forget = reviews naming ``FORGET_PEOPLE``. Labels: 0 negative, 1 positive."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    rng = random.Random(seed)
    used: set[str] = set()
    out = {}
    for split in (Split.TRAIN_FORGET, Split.TRAIN_RETAIN, Split.TEST_FORGET, Split.TEST_RETAIN):
        people = FORGET_PEOPLE if split.is_forget else RETAIN_PEOPLE
        rows = _reviews_about(people, sizes[split], rng, used)
        out[split] = pd.DataFrame(rows, columns=["text", "label"])
    return out


GENERATORS: dict[str, Callable[..., dict[Split, pd.DataFrame]]] = {"reviews": generate_reviews}


def generate(name: str, task=None, seed: int = 0) -> dict[Split, pd.DataFrame]:
    """The raw splits of generated set ``name`` (columns as its task expects)."""
    if name not in GENERATORS:
        raise DataError(f"unknown generated data set {name!r}", f"use one of: {', '.join('generated:' + n for n in sorted(GENERATORS))}")
    return GENERATORS[name](seed=seed)
