"""Recipes that rebuild the paper's three unlearning data sets from their public sources.

``build_recipe(name, source, out_dir, seed, **params)`` is the single entry point; ``RECIPES`` lists them:
  * ``sst2`` — GLUE SST-2, train+validation pooled, forget = reviews naming ``SST2_NAMES`` (whole words);
  * ``sst2_paper`` — the authors' published splits (hub ``karuna-bhaila/Unlearning_SST2``, files v3_*.csv);
  * ``yelp_polarity`` — Yelp polarity, forget = k-means clusters of MiniLM embeddings;
  * ``wmdp_sciq`` — forget = WMDP-bio questions, retain = SciQ, four lettered choices A-D.
``source`` is a hub name (``hub:OWNER/NAME`` or ``OWNER/NAME``), a local folder or file holding copies of the
same files, or None for the paper's hub data set. The hub code is real; without network it fails with a
one-line DataError that says to pass a local copy instead.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from spul.data import builders
from spul.data.sources import FILE_SUFFIXES, DataConfig, load_unlearning_data, read_table
from spul.data.splits import Split, UnlearningData
from spul.data.tasks import MCQA_LETTERS, Task, TaskConfig, format_multiple_choice, multiple_choice_task_config
from spul.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# People whose reviews form the SST-2 forget set: a list like the paper's (~50 first and last names of
# actors and directors common in SST-2). Matched as whole words, case-insensitive.
SST2_NAMES: tuple[str, ...] = (
    "john", "michael", "robert", "steven", "steve", "allen", "spielberg", "sandler", "de niro", "david",
    "william", "williams", "murphy", "george", "hoffman", "scorsese", "jim", "paul", "jackson", "lawrence",
    "roger", "kevin", "hitchcock", "jason", "eastwood", "martha", "peter", "joe", "jackie", "scott",
    "vincent", "willis", "bruce", "julie", "jennifer", "tarantino", "elizabeth", "howard", "adam", "sandra",
    "anthony", "gary", "nicholas", "mcdormand", "anderson", "payne", "edward", "eddie", "martin", "henry",
    "charlie", "lucy",
)
SENTIMENT_WORDS = ["negative", "positive"]
SST2_HUB = "nyu-mll/glue"
SST2_PAPER_HUB = "karuna-bhaila/Unlearning_SST2"
YELP_HUB = "fancyzhx/yelp_polarity"
SCIQ_HUB = "allenai/sciq"
WMDP_HUB = "cais/wmdp"


# ------------------------------------------------------------------------------------------------ loading
def _is_local(source: str) -> Path | None:
    path = Path(os.path.expanduser(source.removeprefix("local:")))
    return path if path.exists() else None


def _hub_name(source: str) -> str:
    name = source.removeprefix("hub:")
    if name.count("/") != 1 and name not in ("glue", "sciq", "yelp_polarity"):
        raise DataError(f"source {source!r} is neither an existing local path nor a hub name", "pass a folder/file that exists, or hub:OWNER/NAME")
    return name


def load_hub_split(name: str, config: str | None, split: str, revision: str | None = None) -> pd.DataFrame:
    """One split of a hub data set as a DataFrame; any failure (e.g. offline) becomes a one-line DataError."""
    try:
        import datasets

        return datasets.load_dataset(name, config, split=split, revision=revision).to_pandas()
    except Exception as err:  # noqa: BLE001 - the hub client raises many types; all mean "can't get it"
        first = str(err).splitlines()[0][:120] if str(err) else ""
        raise DataError(
            f"could not load hub data set {name!r}{f' ({config})' if config else ''} split {split!r} ({type(err).__name__}: {first})",
            "check the name and your network, or download the files and pass their local folder as the source",
        ) from None


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)


def _rel(path: Path, root: Path) -> str:
    """The path below ``root`` in lower case (the root's own name says nothing about the file)."""
    return path.name.lower() if root.is_file() else path.relative_to(root).as_posix().lower()


def _pick(files: list[Path], *keywords: str, required: bool = True, where: str = "") -> Path | None:
    """The one file whose name (or folder name) contains a keyword; several matches are an error."""

    root = Path(where) if where else None

    def hits(p: Path, in_stem: bool) -> bool:
        # a file name first (train.csv); else a folder below the root (train/part-0.parquet)
        names = [p.stem.lower()] if in_stem else [_rel(p.parent, root) if root and root.is_dir() and p.parent != root else ""]
        return any(k in n for k in keywords for n in names if n)

    matches = [p for p in files if hits(p, True)] or [p for p in files if hits(p, False)]
    if len(matches) > 1:
        # extra files beside the split's own (train.tsv next to train_full.tsv): a file named exactly after
        # the split wins, then one whose name starts with it (train-00000-of-00001.parquet)
        exact = [p for p in matches if p.stem.lower() in keywords]
        if len(exact) != 1:
            prefixed = [p for p in matches if any(p.stem.lower().startswith(k) for k in keywords)]
            exact = prefixed if len(prefixed) == 1 else exact
        if len(exact) == 1:
            log.info("several files match %r in %s; using %s (named after the split)", keywords[0], where, exact[0].name)
            return exact[0]
        raise DataError(f"several files in {where!r} match {keywords[0]!r}: {[p.name for p in matches]}",
                        f"name the one to use exactly {keywords[0]!r} (e.g. {keywords[0]}.tsv), or keep one file per split in the folder")
    if not matches:
        if required:
            raise DataError(f"no file for {keywords[0]!r} in {where!r}", f"add a file whose name contains {keywords[0]!r} (csv/tsv/jsonl/json/parquet)")
        return None
    return matches[0]


# ------------------------------------------------------------------------------------------------ SST-2
def load_sst2_pool(source: str | None = None, revision: str | None = None) -> pd.DataFrame:
    """GLUE SST-2 train + validation pooled (68,221 rows), columns text and label (0 neg / 1 pos).

    A local source is a folder with ``train`` and ``validation``/``dev`` files (GLUE's train.tsv/dev.tsv
    or the hub's parquet files), or one file already pooled.
    """
    source = source or f"hub:{SST2_HUB}"
    local = _is_local(source)
    if local is not None:
        files = _files(local)
        if local.is_file():
            parts = [read_table(local)]
        else:
            train = _pick(files, "train", where=str(local))
            dev = _pick([f for f in files if f != train], "validation", "dev", where=str(local))
            parts = [read_table(train), read_table(dev)]
    else:
        name = _hub_name(source)
        config = "sst2" if name.endswith("glue") else None
        parts = [load_hub_split(name, config, split, revision) for split in ("train", "validation")]
    frames = []
    for part in parts:
        text_col = "sentence" if "sentence" in part.columns else "text"
        if text_col not in part.columns or "label" not in part.columns:
            raise DataError(f"SST-2 file has columns {list(part.columns)}, expected sentence/text and label", "pass GLUE SST-2 files (sentence, label)")
        frames.append(pd.DataFrame({"text": part[text_col].astype(str).str.strip(), "label": part["label"].astype(int)}))
    return pd.concat(frames, ignore_index=True)


def build_sst2(source: str | None = None, seed: int = 0, names: list[str] | tuple[str, ...] = SST2_NAMES, test_fraction: float = 0.3, revision: str | None = None) -> UnlearningData:
    """The paper's SST-2 split: pool train+validation, forget reviews naming ``names``, re-split 70/30."""
    pool = load_sst2_pool(source, revision)
    return builders.split_by_entities(pool, list(names), seed=seed, test_fraction=test_fraction, label_words=SENTIMENT_WORDS, source=f"sst2:{source or 'hub:' + SST2_HUB}")


def build_sst2_paper(source: str | None = None, seed: int = 0, revision: str | None = None) -> UnlearningData:
    """The authors' published SST-2 splits, from the hub or a local folder of the same v3_*.csv files."""
    source = source or f"hub:{SST2_PAPER_HUB}"
    data = load_unlearning_data(DataConfig(source=source, seed=seed, revision=revision), Task(TaskConfig()))
    data.build_info = {"builder": "published", "source": source}  # type: ignore[attr-defined]
    return data


# ------------------------------------------------------------------------------------------------ Yelp
def _yelp_frame(df: pd.DataFrame) -> pd.DataFrame:
    if {"text", "label"} <= set(df.columns):
        return pd.DataFrame({"text": df["text"].astype(str), "label": df["label"].astype(int)})
    if len(df.columns) == 2:
        # the original yelp_review_polarity_csv: no header, first column 1 (negative) / 2 (positive)
        first, second = df.columns
        header = pd.DataFrame({"label": [first], "text": [second]})
        raw = pd.concat([header, df.rename(columns={first: "label", second: "text"})], ignore_index=True)
        return pd.DataFrame({"text": raw["text"].astype(str), "label": raw["label"].astype(int) - 1})
    raise DataError(f"Yelp file has columns {list(df.columns)}, expected text and label", "pass Yelp polarity files with text and label columns")


def load_yelp(source: str | None = None, revision: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Yelp polarity train and test (label 0 negative / 1 positive) from the hub or a local folder."""
    source = source or f"hub:{YELP_HUB}"
    local = _is_local(source)
    if local is not None:
        if local.is_file():
            raise DataError(f"Yelp source {str(local)!r} is one file; the recipe needs train and test", "pass the folder holding train and test files")
        files = _files(local)
        train_path = _pick(files, "train", where=str(local))
        test_path = _pick([f for f in files if f != train_path], "test", where=str(local))
        return _yelp_frame(read_table(train_path)), _yelp_frame(read_table(test_path))
    name = _hub_name(source)
    return tuple(_yelp_frame(load_hub_split(name, None, s, revision)) for s in ("train", "test"))  # type: ignore[return-value]


def _sample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df.reset_index(drop=True)
    return df.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)


def build_yelp_polarity(
    source: str | None = None,
    seed: int = 0,
    k: int = 20,
    forget_clusters: list[int] | int = 1,
    train_size: int | None = 100_000,
    test_size: int | None = 19_000,
    encoder: str | None = None,
    embed_fn: builders.EmbedFn | None = None,
    revision: str | None = None,
) -> UnlearningData:
    """Yelp polarity split by k-means clusters of sentence embeddings; test rows go to the nearest centre.

    The paper used ~100k training and ~19k test reviews; ``train_size``/``test_size`` sample that many
    (seeded), None keeps all. Embedding 100k reviews takes a while on a CPU.
    """
    train, test = load_yelp(source, revision)
    train, test = _sample(train, train_size, seed), _sample(test, test_size, seed)
    return builders.split_by_clusters(
        train, test, k=k, forget_clusters=forget_clusters, encoder=encoder, embed_fn=embed_fn, seed=seed,
        label_words=SENTIMENT_WORDS, source=f"yelp_polarity:{source or 'hub:' + YELP_HUB}",
    )


# ------------------------------------------------------------------------------------------------ WMDP + SciQ
def mcqa_frame(questions: list[str], choices: list[list[str]], answers: list[int]) -> pd.DataFrame:
    """Rows with the rendered ``text`` (question + lettered choices), integer ``label`` and the raw columns.

    ``choices`` is stored as a JSON list so that written CSVs load back through ``sources`` with the
    multiple-choice task.
    """
    return pd.DataFrame(
        {
            "text": [format_multiple_choice(q, c, MCQA_LETTERS) for q, c in zip(questions, choices)],
            "label": [int(a) for a in answers],
            "question": [str(q).strip() for q in questions],
            "choices": [json.dumps([str(x).strip() for x in c], ensure_ascii=False) for c in choices],
        }
    )


def sciq_to_mcqa(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """SciQ rows (question, distractor1-3, correct_answer) with the four choices shuffled (seeded)."""
    needed = ["question", "distractor1", "distractor2", "distractor3", "correct_answer"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"SciQ data has no column {missing[0]!r}; columns are {list(df.columns)}", "pass the allenai/sciq files")
    rng = random.Random(seed)
    questions, choices, answers = [], [], []
    for row in df.itertuples(index=False):
        options = [row.correct_answer, row.distractor1, row.distractor2, row.distractor3]
        order = list(range(4))
        rng.shuffle(order)
        questions.append(row.question)
        choices.append([options[i] for i in order])
        answers.append(order.index(0))
    return mcqa_frame(questions, choices, answers)


def wmdp_to_mcqa(df: pd.DataFrame) -> pd.DataFrame:
    """WMDP rows (question, choices list, answer index) kept in their published order."""
    missing = [c for c in ("question", "choices", "answer") if c not in df.columns]
    if missing:
        raise DataError(f"WMDP data has no column {missing[0]!r}; columns are {list(df.columns)}", "pass the cais/wmdp wmdp-bio file")
    choices = [json.loads(c) if isinstance(c, str) else list(c) for c in df["choices"]]
    bad = [i for i, c in enumerate(choices) if len(c) != 4]
    if bad:
        raise DataError(f"WMDP row {bad[0]} has {len(choices[bad[0]])} choices, expected 4", "pass the four-choice wmdp-bio questions")
    answers = [MCQA_LETTERS.index(a.strip().upper()) if isinstance(a, str) and not a.strip().isdigit() else int(a) for a in df["answer"]]
    return mcqa_frame(df["question"].tolist(), choices, answers)


def load_wmdp_sciq(source: str | None = None, sciq: str | None = None, wmdp: str | None = None, revision: str | None = None) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """SciQ train/validation/test and WMDP-bio test, from the hub or local files.

    ``source`` may be a folder holding both (files whose path names sciq train/validation/test and
    wmdp bio); ``sciq``/``wmdp`` override either part with its own hub name or path.
    """
    sciq = sciq or source or f"hub:{SCIQ_HUB}"
    wmdp = wmdp or source or f"hub:{WMDP_HUB}"
    local_sciq, local_wmdp = _is_local(sciq), _is_local(wmdp)
    if local_sciq is not None:
        files = [f for f in _files(local_sciq) if "wmdp" not in _rel(f, local_sciq)]
        sciq_parts = {}
        for split, keys in (("train", ("train",)), ("validation", ("validation", "valid", "dev")), ("test", ("test",))):
            sciq_parts[split] = read_table(_pick(files, *keys, where=str(local_sciq)))  # type: ignore[arg-type]
    else:
        sciq_parts = {s: load_hub_split(_hub_name(sciq), None, s, revision) for s in ("train", "validation", "test")}
    if local_wmdp is not None:
        files = [f for f in _files(local_wmdp) if "sciq" not in _rel(f, local_wmdp)]
        if local_wmdp.is_dir():
            files = [f for f in files if "wmdp" in _rel(f, local_wmdp) or "bio" in _rel(f, local_wmdp)] or files
        wmdp_df = read_table(files[0] if len(files) == 1 else _pick(files, "bio", where=str(local_wmdp)))  # type: ignore[arg-type]
    else:
        wmdp_df = load_hub_split(_hub_name(wmdp), "wmdp-bio", "test", revision)
    return sciq_parts, wmdp_df


def build_wmdp_sciq(
    source: str | None = None, seed: int = 0, sciq: str | None = None, wmdp: str | None = None,
    forget_train_size: int | None = 900, test_fraction: float = 0.3, revision: str | None = None,
) -> UnlearningData:
    """Forget = WMDP-bio (900 train / rest test, as in the paper), retain = SciQ train+validation / test."""
    sciq_parts, wmdp_df = load_wmdp_sciq(source, sciq, wmdp, revision)
    retain_train = sciq_to_mcqa(pd.concat([sciq_parts["train"], sciq_parts["validation"]], ignore_index=True), seed)
    retain_test = sciq_to_mcqa(sciq_parts["test"], seed + 1)
    forget = wmdp_to_mcqa(wmdp_df)
    if forget_train_size is not None:
        if not 0 < forget_train_size < len(forget):
            raise ConfigError(f"forget_train_size={forget_train_size} must be between 1 and {len(forget) - 1} (WMDP has {len(forget)} rows)", "lower forget_train_size or pass None for a 70/30 split")
        test_fraction = 1 - forget_train_size / len(forget)
    f_train, f_test = builders.split_train_test(forget, test_fraction, seed, "forget")
    splits = {Split.TRAIN_FORGET: f_train, Split.TRAIN_RETAIN: _drop_shared(retain_train, forget), Split.TEST_FORGET: f_test, Split.TEST_RETAIN: _drop_shared(retain_test, forget)}
    data = UnlearningData(splits, source=f"wmdp_sciq:{source or 'hub'}", label_words=list(MCQA_LETTERS))
    data.build_info = {"builder": "wmdp_sciq", "seed": seed, "forget_train_size": len(f_train), "task": "multiple_choice"}  # type: ignore[attr-defined]
    return data


def _drop_shared(retain: pd.DataFrame, forget: pd.DataFrame) -> pd.DataFrame:
    """Retain rows whose rendered text is also a forget row would leak; drop them."""
    shared = retain["text"].isin(set(forget["text"]))
    if shared.any():
        log.warning("dropping %d retain question(s) that are also forget questions", int(shared.sum()))
    return retain[~shared].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Recipe:
    """A named way to build a paper data set; ``task`` says which task config reads its CSVs."""

    build: Callable[..., UnlearningData]
    description: str
    default_source: str
    task: Callable[[], TaskConfig]


RECIPES: dict[str, Recipe] = {
    "sst2": Recipe(build_sst2, "GLUE SST-2 (train+validation), forget = reviews naming ~50 people", f"hub:{SST2_HUB}", TaskConfig),
    "sst2_paper": Recipe(build_sst2_paper, "the SPUL authors' published SST-2 splits (v3_*.csv)", f"hub:{SST2_PAPER_HUB}", TaskConfig),
    "yelp_polarity": Recipe(build_yelp_polarity, "Yelp polarity, forget = k-means clusters of MiniLM embeddings", f"hub:{YELP_HUB}", TaskConfig),
    "wmdp_sciq": Recipe(build_wmdp_sciq, "forget = WMDP-bio, retain = SciQ, multiple choice A-D", f"hub:{SCIQ_HUB} + hub:{WMDP_HUB}", multiple_choice_task_config),
}


def build_recipe(name: str, source: str | None = None, out_dir: str | os.PathLike | None = None, seed: int = 0, **params: Any) -> UnlearningData:
    """Build recipe ``name`` from ``source`` (None: the paper's hub data) and, with ``out_dir``, write it."""
    if name not in RECIPES:
        raise ConfigError(f"unknown data recipe {name!r}", f"use one of: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    try:
        data = recipe.build(source=source, seed=seed, **params)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ConfigError(f"recipe {name!r} does not take parameter {str(err).split()[-1]}", f"see help(spul.data.recipes.{recipe.build.__name__})") from None
        raise
    if out_dir is not None:
        safe = {k: v for k, v in params.items() if not callable(v)}
        builders.write_built(data, out_dir, {"recipe": name, "recipe_source": source or recipe.default_source, "recipe_params": safe, "task": recipe.task().kind.value})
    return data
