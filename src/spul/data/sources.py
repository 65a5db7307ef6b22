"""Where unlearning data comes from: generated sets, local files or folders, and the Hugging Face hub.

A source string is one of
  * ``generated:NAME`` — a data set the project generates (``spul.data.generated``), no download;
  * a local folder holding one file per split (``*train_forget*.csv|jsonl|json|parquet`` …);
  * ``hub:OWNER/NAME`` (or ``OWNER/NAME`` that is not a local path) — a hub data set with those splits, or
    with files named like the local folder's.
Per-split files in ``DataConfig.files`` override any of these.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from spul.data.config import DataConfig  # noqa: F401 - re-exported
from spul.data.splits import SPLITS, Split, UnlearningData
from spul.data.tasks import Task, TaskKind, format_multiple_choice
from spul.errors import DataError

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read one CSV/TSV/JSON(L)/parquet file with a clear error for each way it can fail."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist", "check the path in data.source / data.files")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False, na_values=[""], encoding="utf-8")
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], encoding="utf-8")
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, encoding="utf-8")
        if suffix == ".json":
            try:
                return pd.read_json(path, encoding="utf-8")
            except ValueError:
                return pd.read_json(path, lines=True, encoding="utf-8")
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except UnicodeDecodeError:
        raise DataError(f"data file {str(path)!r} is not UTF-8 text", "re-save it as UTF-8 (e.g. iconv -t utf-8)") from None
    except (ValueError, pd.errors.ParserError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data file {str(path)!r} could not be parsed ({first})", f"check that it is valid {suffix[1:].upper()}") from None
    raise DataError(f"data file {str(path)!r} has unsupported type {suffix!r}", f"use one of {', '.join(FILE_SUFFIXES)}")


def find_split_files(folder: Path) -> dict[Split, Path]:
    """Match files to splits by name: a file whose stem ends with (or equals) the split name."""
    found: dict[Split, Path] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
    for split in SPLITS:
        matches = [p for p in files if p.stem.lower().endswith(split.value) or p.stem.lower() == split.value]
        if len(matches) > 1:
            raise DataError(f"folder {str(folder)!r} has several files for split {split.value}: {[m.name for m in matches]}", "keep one file per split or name them in data.files")
        if matches:
            found[split] = matches[0]
    return found


def _normalise(df: pd.DataFrame, split: Split, task: Task, cfg: DataConfig, origin: str) -> pd.DataFrame:
    """Reduce a raw table to ``text`` + integer ``label`` columns, validating every row."""
    if task.kind is TaskKind.MULTIPLE_CHOICE:
        needed = [task.config.question_column, task.config.choices_column, cfg.label_column]
    else:
        needed = [cfg.text_column, cfg.label_column]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        key = {cfg.text_column: "data.text_column", cfg.label_column: "data.label_column"}.get(missing[0], "task.question_column / task.choices_column")
        raise DataError(
            f"split {split.value} ({origin}) has no column {missing[0]!r}; columns are {list(df.columns)}",
            f"set {key} to the right column name",
        )
    if task.kind is TaskKind.MULTIPLE_CHOICE:
        texts = []
        for i, (q, choices) in enumerate(zip(df[task.config.question_column], df[task.config.choices_column])):
            if isinstance(choices, str):
                import json

                try:
                    choices = json.loads(choices)
                except json.JSONDecodeError:
                    raise DataError(f"split {split.value} row {i}: choices {choices[:40]!r} are not a list", "store choices as a JSON list") from None
            choices = list(choices)
            if len(choices) != task.num_labels:
                raise DataError(f"split {split.value} row {i} has {len(choices)} choices, the task has {task.num_labels} answer letters", "give every question exactly one choice per letter in task.label_words")
            texts.append(format_multiple_choice(q, choices, task.label_words))
        text = pd.Series(texts, index=df.index, dtype=object)
    else:
        text = df[cfg.text_column]
    empty = text.isna() | (text.astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"split {split.value} ({origin}) has {int(empty.sum())} empty text(s), first at row {int(empty.to_numpy().nonzero()[0][0])}", "remove or fill the empty rows")
    labels = []
    for i, value in enumerate(df[cfg.label_column]):
        idx = task.label_id(value)
        if idx is None:
            raise DataError(
                f"split {split.value} ({origin}) row {i} has label {value!r}, which is not one of the task's labels {task.label_words}",
                "fix the label, or set task.label_words (ids 0..n-1 or the words themselves)",
            )
        labels.append(idx)
    return pd.DataFrame({"text": text.astype(str).tolist(), "label": labels})


def _load_raw_local(folder: Path) -> tuple[dict[Split, pd.DataFrame], str]:
    files = find_split_files(folder)
    return {s: read_table(p) for s, p in files.items()}, str(folder)


def _load_raw_hub(name: str, revision: str | None) -> tuple[dict[Split, pd.DataFrame], str]:
    """A hub data set with the four splits, either as named splits or as files named after them."""
    import datasets

    try:
        builder_splits = datasets.get_dataset_split_names(name, revision=revision)
    except Exception as err:  # noqa: BLE001 - the hub client raises many types; all mean "can't get it"
        raise DataError(
            f"could not read hub data set {name!r} ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})",
            "check the name and your network, or download it and pass the local folder as data.source",
        ) from None
    raw: dict[Split, pd.DataFrame] = {}
    names = {s.value: s for s in SPLITS}
    if all(s.value in builder_splits for s in SPLITS):
        for s in SPLITS:
            raw[s] = datasets.load_dataset(name, split=s.value, revision=revision).to_pandas()
        return raw, f"hub:{name}"
    from huggingface_hub import list_repo_files

    repo_files = list_repo_files(name, repo_type="dataset", revision=revision)
    for split_name, split in names.items():
        matches = sorted(f for f in repo_files if Path(f).suffix.lower() in FILE_SUFFIXES and Path(f).stem.lower().endswith(split_name))
        if matches:
            # the newest version when several exist (e.g. v1_/v3_ prefixes)
            path = matches[-1]
            raw[split] = datasets.load_dataset(name, data_files={"data": path}, split="data", revision=revision).to_pandas()
    return raw, f"hub:{name}"


def load_unlearning_data(cfg: DataConfig, task: Task) -> UnlearningData:
    """Load, normalise, validate and (optionally) subsample the four splits described by ``cfg``."""
    source = cfg.source.strip()
    raw: dict[Split, pd.DataFrame] = {}
    origin = source
    if source.startswith("generated:"):
        from spul.data.generated import generate

        raw, origin = generate(source.split(":", 1)[1], task=task, seed=cfg.seed), source
    elif source:
        local = Path(os.path.expanduser(source.removeprefix("local:")))
        if local.is_dir():
            raw, origin = _load_raw_local(local)
        elif local.is_file():
            raise DataError(f"data.source {source!r} is a single file, but unlearning needs four splits", "pass the folder holding the four split files, or list them in data.files")
        elif source.startswith("hub:") or (source.count("/") == 1 and not source.startswith((".", "/", "~"))):
            raw, origin = _load_raw_hub(source.removeprefix("hub:"), cfg.revision)
        else:
            raise DataError(f"data.source {source!r} is neither a folder, a hub name nor a generated set", "check the path, or use generated:reviews / hub:OWNER/NAME")
    for split_name, path in cfg.files.items():
        raw[Split(split_name)] = read_table(path)
    missing = [s.value for s in SPLITS if s not in raw]
    if missing:
        raise DataError(f"no file found for split(s) {missing} in {origin!r}", "name files like train_forget.csv, or map them in data.files")
    splits = {s: _normalise(raw[s], s, task, cfg, origin) for s in SPLITS}
    data = UnlearningData(splits, source=origin, label_words=task.label_words)
    return data.subsample(cfg.limits, seed=cfg.seed) if cfg.limits else data


def write_splits(data: UnlearningData, folder: str | os.PathLike, manifest: dict[str, Any] | None = None) -> Path:
    """Write the four splits as CSV (atomically) with a manifest of sizes and hashes."""
    from spul.io import atomic_path, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, df in data:
        with atomic_path(folder / f"{split.value}.csv") as tmp:
            df.to_csv(tmp, index=False)
    write_json(
        folder / "manifest.json",
        {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints(), "label_words": data.label_words, **(manifest or {})},
    )
    return folder
