"""Forget-set builders: turn any labelled text data set into the four unlearning splits.

Three ways to choose what to forget, as in the papers:
  * ``split_by_entities`` — rows naming chosen people (SPUL's SST-2 split), matched as whole words;
  * ``split_by_clusters`` — k-means clusters of sentence embeddings (SPUL's Yelp split);
  * ``split_by_ids`` — an explicit list of row ids or a boolean column.
Forget and retain rows are then each split train/test on their own (seeded, stratified by label), so both
phases see the same forget target. Every builder returns an ``UnlearningData`` whose ``build_info``
attribute records the builder and its parameters; ``write_built`` writes the splits with that manifest.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from spul.data.embeddings import DEFAULT_ENCODER, CachedEncoder, EmbedFn
from spul.data.splits import SPLITS, Split, UnlearningData
from spul.errors import ConfigError, DataError, ModelError
from spul.io import sha256_file, sha256_text

log = logging.getLogger(__name__)

DataInput = pd.DataFrame | UnlearningData


# ------------------------------------------------------------------------------------------------ inputs
def _as_frame(
    data: DataInput, text_column: str = "text", label_column: str = "label", label_words: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Pool the input into one frame with ``text`` and integer ``label`` (other columns kept), plus label words."""
    if isinstance(data, UnlearningData):
        frames = [df for _, df in data]
        df = pd.concat(frames, ignore_index=True)
        return df, list(label_words or data.label_words)
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"builders take a pandas DataFrame or an UnlearningData, got {type(data).__name__}", "pass a DataFrame with text and label columns")
    missing = [c for c in (text_column, label_column) if c not in data.columns]
    if missing:
        raise DataError(f"the data has no column {missing[0]!r}; columns are {list(data.columns)}", "pass text_column= / label_column= naming the right columns")
    if len(data) == 0:
        raise DataError("the data to split is empty", "pass a data set with rows")
    df = data.copy()
    if text_column != "text":
        df = df.drop(columns=[c for c in ("text",) if c in df.columns]).rename(columns={text_column: "text"})
    if label_column != "label":
        df = df.drop(columns=[c for c in ("label",) if c in df.columns]).rename(columns={label_column: "label"})
    empty = df["text"].isna() | (df["text"].astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"{int(empty.sum())} row(s) have an empty text (first at row {int(np.flatnonzero(empty.to_numpy())[0])})", "drop or fill the empty rows first")
    df["text"] = df["text"].astype(str)
    df["label"], words = _label_ids(df["label"], label_words)
    return df.reset_index(drop=True), words


def _label_ids(labels: pd.Series, label_words: Sequence[str] | None) -> tuple[list[int], list[str]]:
    """Integer label ids: words are looked up in ``label_words`` (or sorted), integers are kept."""
    values = labels.tolist()
    if label_words:
        lowered = [str(w).lower() for w in label_words]
        out = []
        for i, v in enumerate(values):
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= int(v) < len(lowered):
                out.append(int(v))
            elif str(v).strip().lower() in lowered:
                out.append(lowered.index(str(v).strip().lower()))
            elif str(v).strip().isdigit() and int(str(v).strip()) < len(lowered):
                out.append(int(str(v).strip()))
            else:
                raise DataError(f"row {i} has label {v!r}, not one of {list(label_words)}", "fix the label or pass label_words=")
        return out, list(label_words)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        ids = [int(v) for v in values]
        if min(ids) < 0:
            raise DataError(f"labels must be ids 0..n-1, found {min(ids)}", "map the labels to 0..n-1 or pass label_words=")
        return ids, [str(i) for i in range(max(ids) + 1)]
    words = sorted({str(v).strip() for v in values})
    return [words.index(str(v).strip()) for v in values], words


def _input_hash(df: pd.DataFrame) -> str:
    return sha256_text(*(f"{t}\t{l}" for t, l in zip(df["text"], df["label"])))[:16]


# --------------------------------------------------------------------------------------- train/test split
def _allocate(group_sizes: list[int], total: int) -> list[int]:
    """Split ``total`` test rows over groups in proportion to their sizes (largest remainder)."""
    n = sum(group_sizes)
    exact = [total * g / n for g in group_sizes]
    counts = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(group_sizes)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def split_train_test(df: pd.DataFrame, test_fraction: float, seed: int, what: str = "rows") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split stratified by label; both parts keep the input's row order."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}", "use e.g. test_fraction=0.3")
    if len(df) < 2:
        raise DataError(f"only {len(df)} {what} row(s): too few to split into train and test", "choose a larger forget/retain set")
    total = min(max(int(round(len(df) * test_fraction)), 1), len(df) - 1)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero((df["label"] == lab).to_numpy()) for lab in sorted(df["label"].unique())]
    counts = _allocate([len(g) for g in groups], total)
    test_idx = np.concatenate([rng.permutation(g)[:c] for g, c in zip(groups, counts)]) if groups else np.array([], int)
    is_test = np.zeros(len(df), dtype=bool)
    is_test[test_idx.astype(int)] = True
    return df[~is_test].reset_index(drop=True), df[is_test].reset_index(drop=True)


def _finish(
    df: pd.DataFrame, forget: np.ndarray, label_words: list[str], seed: int, test_fraction: float, source: str, info: dict[str, Any]
) -> UnlearningData:
    """Split forget and retain rows train/test separately and wrap them with their build info."""
    n_forget = int(forget.sum())
    if n_forget == 0:
        raise DataError(f"{info['builder']} selected no forget rows", "choose names / clusters / ids that occur in the data")
    if n_forget == len(df):
        raise DataError(f"{info['builder']} selected every row as forget, leaving no retain rows", "choose a narrower forget target")
    f_train, f_test = split_train_test(df[forget], test_fraction, seed * 2 + 1, "forget")
    r_train, r_test = split_train_test(df[~forget], test_fraction, seed * 2 + 2, "retain")
    splits = {Split.TRAIN_FORGET: f_train, Split.TRAIN_RETAIN: r_train, Split.TEST_FORGET: f_test, Split.TEST_RETAIN: r_test}
    return _wrap(splits, source, label_words, {**info, "seed": seed, "test_fraction": test_fraction, "input_rows": len(df), "input_hash": _input_hash(df)})


def _wrap(splits: dict[Split, pd.DataFrame], source: str, label_words: list[str], info: dict[str, Any]) -> UnlearningData:
    data = UnlearningData(splits, source=source, label_words=list(label_words))
    data.build_info = info  # type: ignore[attr-defined]  # read by write_built
    return data


# ------------------------------------------------------------------------------------------------ entities
def entity_pattern(names: Sequence[str]) -> re.Pattern[str]:
    """One case-insensitive regex matching any name as whole words ("allen" not in "challenging").

    Words of a multi-word name may be separated by any whitespace; a possessive ("sandler's",
    "sandler 's") still matches because the apostrophe is not a word character.
    """
    cleaned = _clean_names(names)
    alternatives = ["\\s+".join(re.escape(w) for w in name.split()) for name in sorted(cleaned, key=len, reverse=True)]
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _clean_names(names: Sequence[str] | str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    cleaned = []
    for name in names or []:
        name = " ".join(str(name).split()).lower()
        if name and name not in cleaned:
            cleaned.append(name)
    if not cleaned:
        raise DataError("the list of entity names is empty", "pass at least one name, e.g. names=['spielberg']")
    return cleaned


def match_entities(texts: Sequence[str] | pd.Series, names: Sequence[str]) -> np.ndarray:
    """Boolean mask: which texts name any of ``names`` (whole-word, case-insensitive)."""
    pattern = entity_pattern(names)
    return np.array([bool(pattern.search(str(t))) for t in texts], dtype=bool)


def entity_counts(texts: Sequence[str] | pd.Series, names: Sequence[str]) -> dict[str, int]:
    """How many texts each name matches, to spot names that match nothing or far too much."""
    cleaned = _clean_names(names)
    pattern = entity_pattern(cleaned)
    counts = dict.fromkeys(cleaned, 0)
    for text in texts:
        for found in {" ".join(m.group(0).lower().split()) for m in pattern.finditer(str(text))}:
            counts[found] = counts.get(found, 0) + 1
    return counts


def split_by_entities(
    data: DataInput,
    names: Sequence[str],
    *,
    seed: int = 0,
    test_fraction: float = 0.3,
    text_column: str = "text",
    label_column: str = "label",
    label_words: Sequence[str] | None = None,
    source: str = "",
) -> UnlearningData:
    """Forget = rows naming any of ``names`` (whole words); forget and retain each split train/test 70/30."""
    cleaned = _clean_names(names)
    df, words = _as_frame(data, text_column, label_column, label_words)
    forget = match_entities(df["text"], cleaned)
    if not forget.any():
        raise DataError(f"none of the {len(cleaned)} name(s) occurs in the data (e.g. {cleaned[0]!r})", "check the spelling, or propose names with propose_entities()")
    counts = {n: int(c) for n, c in entity_counts(df["text"], cleaned).items()}
    unused = [n for n, c in counts.items() if c == 0]
    if unused:
        log.warning("entity names matching no row: %s", ", ".join(unused))
    info = {"builder": "entities", "names": cleaned, "name_counts": counts}
    return _finish(df, forget, words, seed, test_fraction, source or getattr(data, "source", "") or "dataframe", info)


def propose_entities(texts: Sequence[str], top_k: int = 50, model: str = "en_core_web_sm", labels: Sequence[str] = ("PERSON",)) -> list[tuple[str, int]]:
    """Most frequent named entities (default people) found by an offline spaCy model, as (name, count).

    A helper to draft a name list for ``split_by_entities``; spaCy is optional, so this fails with an
    install hint when it is missing. Note: spaCy finds far fewer names in lower-cased text such as SST-2.
    """
    try:
        import spacy
    except ImportError:
        raise ModelError("propose_entities needs spaCy, which is not installed", f"pip install spacy && python -m spacy download {model}, or pass names yourself") from None
    try:
        nlp = spacy.load(model, disable=["parser", "lemmatizer", "tagger"])
    except OSError:
        raise ModelError(f"spaCy model {model!r} is not installed", f"python -m spacy download {model}, or pass names yourself") from None
    counts: dict[str, int] = {}
    wanted = set(labels)
    for doc in nlp.pipe((str(t) for t in texts), batch_size=256):
        for name in {" ".join(ent.text.lower().split()) for ent in doc.ents if ent.label_ in wanted}:
            name = re.sub(r"\s*'s$", "", name)
            if name:
                counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]


# ------------------------------------------------------------------------------------------------ clusters
def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def _embed(embed_fn: EmbedFn, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embed_fn(texts), dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) != len(texts):
        raise DataError(f"the embedding function returned shape {vectors.shape} for {len(texts)} texts", "return one row vector per text")
    return _normalise_rows(vectors)


def cached_encoder(encoder: str | os.PathLike | None = None, progress: bool = True) -> EmbedFn:
    """The encoder behind the on-disk embedding cache (``spul.data.embeddings``): repeated builds encode nothing."""
    return CachedEncoder(encoder, progress=progress)


def _encoder_name(embed: EmbedFn, embed_fn: EmbedFn | None, encoder: str | os.PathLike | None) -> str:
    identity = getattr(embed, "identity", None)
    if identity and (embed_fn is None or getattr(embed_fn, "cache", None) is not None):
        return str(identity)
    return "embed_fn" if embed_fn else str(encoder or DEFAULT_ENCODER)


def _kmeans(embed: EmbedFn, texts: list[str], k: int, seed: int, n_init: int):
    from sklearn.cluster import KMeans

    x = _embed(embed, texts)
    km = KMeans(n_clusters=int(k), random_state=seed, n_init=n_init).fit(x)
    return km, km.labels_.astype(int), x


def preview_clusters(
    data: DataInput,
    k: int = 10,
    *,
    encoder: str | os.PathLike | None = None,
    embed_fn: EmbedFn | None = None,
    seed: int = 0,
    examples: int = 3,
    text_column: str = "text",
    label_column: str = "label",
    label_words: Sequence[str] | None = None,
    n_init: int = 4,
) -> dict[str, Any]:
    """Cluster sizes, label counts and example texts, exactly as ``split_by_clusters`` (same k, seed and
    encoder) would cluster ``data``: choose ``forget_clusters`` from this before building."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ConfigError(f"k must be an integer >= 2, got {k!r}", "use e.g. k=10")
    df, words = _as_frame(data, text_column, label_column, label_words)
    if len(df) < k:
        raise DataError(f"{len(df)} rows cannot form k={k} clusters", "lower k or pass more rows")
    embed = embed_fn or cached_encoder(encoder)
    _, labels, _ = _kmeans(embed, df["text"].tolist(), k, seed, n_init)
    clusters = []
    for c in range(int(k)):
        rows = df[labels == c]
        clusters.append({
            "cluster": c, "size": int(len(rows)),
            "labels": {words[int(lab)] if int(lab) < len(words) else str(lab): int(n) for lab, n in rows["label"].value_counts().sort_index().items()},
            "examples": rows["text"].head(examples).str.slice(0, 120).tolist(),
        })
    return {"k": int(k), "seed": seed, "rows": len(df), "encoder": _encoder_name(embed, embed_fn, encoder), "clusters": clusters}


def split_by_clusters(
    train_df: DataInput,
    test_df: pd.DataFrame | None = None,
    k: int = 10,
    forget_clusters: Sequence[int] | int = 1,
    *,
    encoder: str | os.PathLike | None = None,
    embed_fn: EmbedFn | None = None,
    seed: int = 0,
    test_fraction: float = 0.3,
    text_column: str = "text",
    label_column: str = "label",
    label_words: Sequence[str] | None = None,
    source: str = "",
    n_init: int = 4,
) -> UnlearningData:
    """Forget = rows in chosen k-means clusters (cosine: unit-length embeddings) of the training texts.

    ``forget_clusters`` is a list of cluster ids, or a count of clusters to draw with ``seed``. With
    ``test_df`` its rows go to the nearest of the training centres; without it, the pooled rows are clustered
    and forget/retain are each split train/test by ``test_fraction``. ``embed_fn`` (texts -> 2-D array)
    replaces the encoder (by default vectors come from the on-disk cache of ``spul.data.embeddings``).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ConfigError(f"k must be an integer >= 2, got {k!r}", "use e.g. k=10")
    if isinstance(forget_clusters, (int, np.integer)) and not isinstance(forget_clusters, bool):
        if not 1 <= forget_clusters < k:
            raise ConfigError(f"cannot forget {forget_clusters} of k={k} clusters", f"forget between 1 and {k - 1} clusters, or raise k")
        chosen = sorted(int(c) for c in np.random.default_rng(seed).choice(k, size=int(forget_clusters), replace=False))
    else:
        chosen = sorted({int(c) for c in forget_clusters})
        if not chosen:
            raise ConfigError("forget_clusters is empty", "name at least one cluster id, e.g. forget_clusters=[0]")
        if len(chosen) >= k:
            raise ConfigError(f"k={k} is too small for {len(chosen)} forget clusters", f"use k > {len(chosen)} so some clusters are retained")
        bad = [c for c in chosen if not 0 <= c < k]
        if bad:
            raise ConfigError(f"forget cluster id {bad[0]} is outside 0..{k - 1}", f"use cluster ids below k={k}")
    train, words = _as_frame(train_df, text_column, label_column, label_words)
    test = None
    if test_df is not None:
        test, test_words = _as_frame(test_df, text_column, label_column, label_words or words)
        if not label_words and test_words != words and not all(w.isdigit() for w in words + test_words):
            raise DataError(f"train labels {words} and test labels {test_words} differ", "pass label_words= so both map to the same ids")
    if len(train) < k:
        raise DataError(f"{len(train)} training rows cannot form k={k} clusters", "lower k or pass more rows")
    embed = embed_fn or cached_encoder(encoder)
    km, train_cluster, _ = _kmeans(embed, train["text"].tolist(), k, seed, n_init)
    sizes = np.bincount(train_cluster, minlength=k)
    examples = {int(c): train["text"][train_cluster == c].head(3).str.slice(0, 100).tolist() for c in range(k)}
    info: dict[str, Any] = {
        "builder": "clusters",
        "k": int(k),
        "forget_clusters": chosen,
        "encoder": _encoder_name(embed, embed_fn, encoder),
        "cluster_sizes": {int(c): int(s) for c, s in enumerate(sizes)},
        "cluster_examples": examples,
    }
    name = source or getattr(train_df, "source", "") or "dataframe"
    train_forget = np.isin(train_cluster, chosen)
    if test is None:
        return _finish(train, train_forget, words, seed, test_fraction, name, info)
    test_cluster = km.predict(_embed(embed, test["text"].tolist())).astype(int)
    test_forget = np.isin(test_cluster, chosen)
    for what, mask, frame in (("training", train_forget, train), ("test", test_forget, test)):
        if not mask.any():
            raise DataError(f"forget clusters {chosen} hold no {what} rows", "choose other clusters (see cluster_sizes) or a different k")
        if mask.all():
            raise DataError(f"forget clusters {chosen} hold every {what} row", "choose fewer clusters or a larger k")
    splits = {
        Split.TRAIN_FORGET: train[train_forget].reset_index(drop=True),
        Split.TRAIN_RETAIN: train[~train_forget].reset_index(drop=True),
        Split.TEST_FORGET: test[test_forget].reset_index(drop=True),
        Split.TEST_RETAIN: test[~test_forget].reset_index(drop=True),
    }
    info.update(seed=seed, input_rows=len(train) + len(test), input_hash=_input_hash(pd.concat([train, test])))
    return _wrap(splits, name, words, info)


# ------------------------------------------------------------------------------------------------ ids
def split_by_ids(
    data: DataInput,
    ids: Sequence[Any] | None = None,
    *,
    column: str | None = None,
    id_column: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.3,
    text_column: str = "text",
    label_column: str = "label",
    label_words: Sequence[str] | None = None,
    source: str = "",
) -> UnlearningData:
    """Forget = the rows whose id is in ``ids`` (ids from ``id_column`` or the row position), or where the
    boolean ``column`` is true."""
    if (ids is None) == (column is None):
        raise ConfigError("split_by_ids needs exactly one of ids= or column=", "pass a list of ids, or the name of a boolean column")
    df, words = _as_frame(data, text_column, label_column, label_words)
    if column is not None:
        if column not in df.columns:
            raise DataError(f"the data has no column {column!r}; columns are {list(df.columns)}", "name the boolean forget column with column=")
        values = df[column]
        as_bool = values.map(lambda v: {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}.get(str(v).strip().lower()))
        if as_bool.isna().any():
            bad = values[as_bool.isna()].iloc[0]
            raise DataError(f"column {column!r} holds {bad!r}, not true/false", "make it a boolean column (true/false or 1/0)")
        forget = as_bool.astype(bool).to_numpy()
        info: dict[str, Any] = {"builder": "ids", "column": column}
    else:
        wanted = list(ids or [])
        if not wanted:
            raise DataError("the list of forget ids is empty", "pass at least one id")
        if id_column is not None and id_column not in df.columns:
            raise DataError(f"the data has no id column {id_column!r}; columns are {list(df.columns)}", "name the id column with id_column=")
        keys = df[id_column].astype(str) if id_column else pd.Series(range(len(df))).astype(str)
        wanted_keys = {str(i) for i in wanted}
        unknown = sorted(wanted_keys - set(keys))
        if unknown:
            raise DataError(f"{len(unknown)} forget id(s) are not in the data (e.g. {unknown[0]!r})", "check the ids" + ("" if id_column else ", or pass id_column= (default ids are row positions 0..n-1)"))
        forget = keys.isin(wanted_keys).to_numpy()
        info = {"builder": "ids", "id_column": id_column, "n_ids": len(wanted_keys), "ids_hash": sha256_text(*sorted(wanted_keys))[:16]}
    return _finish(df, forget, words, seed, test_fraction, source or getattr(data, "source", "") or "dataframe", info)


# ------------------------------------------------------------------------------------------------ writing
def write_built(data: UnlearningData, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None,
                leakage: dict[str, Any] | None = None) -> Path:
    """Write the four CSVs and a manifest: source, sizes, label counts, builder parameters, file hashes and,
    when given, the leakage report (``spul.data.leakage``)."""
    from spul.data.sources import write_splits
    from spul.io import read_json, write_json

    info = dict(getattr(data, "build_info", {}) or {})
    manifest = {"label_counts": data.label_counts(), "build": {**info, **(extra or {})}}
    if leakage is not None:
        manifest["leakage"] = {**leakage, "fingerprints": data.fingerprints()}
    folder = write_splits(data, out_dir, manifest)
    full = read_json(folder / "manifest.json")
    full["file_sha256"] = {s.value: sha256_file(folder / f"{s.value}.csv") for s in SPLITS}
    write_json(folder / "manifest.json", full)
    return folder
