"""Generative unlearning data: TOFU-style entity QA and MUSE-style passages, from the hub, local files or the
generated stand-ins.

A ``GenerationData`` is a set of named tables:

* ``qa`` (TOFU layout): ``forget`` and ``retain`` (``question``, ``answer``; for the truth ratio also
  ``paraphrased_answer`` and a ``perturbed_answer`` list), optionally ``retain_eval`` (TOFU's
  ``retain_perturbed``), ``real_authors`` and ``world_facts`` (utility sets), and ``general`` (general-knowledge
  QA the runs *train* on as retain rows, disjoint from world_facts; ``generated:authors`` makes one).
* ``completion`` (MUSE layout): ``forget`` / ``retain`` / ``holdout`` passages (``text``), ``verbmem_forget``
  (``prompt``, ``gt``: the start of a forget passage and its true continuation), ``knowmem_forget`` and
  ``knowmem_retain`` (``question``, ``answer``).

Sources (``GenerationDataConfig.source``):

* ``generated:authors`` / ``generated:passages`` — offline stand-ins (``spul.data.generated_text``);
* ``hub:locuslab/TOFU`` — configs ``forget01|05|10`` with ``retain99|95|90``, ``*_perturbed`` for the truth ratio;
* ``hub:muse-bench/MUSE-News`` (or ``-Books``) — configs ``raw``, ``verbmem``, ``knowmem``, ``privleak``;
* a local folder: TOFU files named after the hub configs (``forget10_perturbed.jsonl``, ``retain90.json`` …),
  or MUSE's ``data/<corpus>`` layout (``raw/forget.json``, ``verbmem/forget.json``, ``knowmem/forget_qa.json``,
  ``privleak/holdout.json`` …). ``format: auto`` tells them apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spul.data.sources import read_table
from spul.data.tasks import TaskKind
from spul.errors import ConfigError, DataError
from spul.io import sha256_text

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")
QA_COLUMNS = ("question", "answer")
TRUTH_COLUMNS = ("paraphrased_answer", "perturbed_answer")
GENERATED = ("authors", "passages")


@dataclass
class GenerationDataConfig:
    source: str = "generated:authors"
    format: str = "auto"  # auto | tofu | muse
    forget_split: str = "forget10"  # TOFU: forget01 | forget05 | forget10 (generated:authors: any forgetNN)
    revision: str | None = None
    seed: int = 0
    # at most this many rows per named set, drawn reproducibly with ``seed``
    limits: dict[str, int] = field(default_factory=dict)
    # options of the generated stand-ins, e.g. {num_authors: 40} or {num_passages: 30, num_forget: 6}
    generator: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in ("auto", "tofu", "muse"):
            raise ConfigError(f"data.format={self.format!r} is not one of auto, tofu, muse", "use auto unless the folder is ambiguous")
        if not self.source.strip():
            raise ConfigError("data.source is empty", "name generated:authors, generated:passages, a folder or hub:OWNER/NAME")
        for name, n in self.limits.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"data.limits.{name} must be a positive integer, got {n!r}", "write e.g. data.limits.retain=200")


@dataclass
class GenerationData:
    """Named tables of a generative unlearning data set, validated once and fingerprinted."""

    kind: TaskKind
    sets: dict[str, pd.DataFrame]
    source: str = ""

    def __post_init__(self) -> None:
        self.kind = TaskKind(self.kind)
        self.sets = {name: df.reset_index(drop=True) for name, df in self.sets.items()}
        self.validate()

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self.sets:
            raise DataError(f"data from {self.source!r} has no set {name!r}; it has {sorted(self.sets)}", "evaluate a set it has")
        return self.sets[name]

    def __contains__(self, name: str) -> bool:
        return name in self.sets

    def __iter__(self) -> Iterator[tuple[str, pd.DataFrame]]:
        return iter(self.sets.items())

    def sizes(self) -> dict[str, int]:
        return {name: len(df) for name, df in self.sets.items()}

    def has_truth_columns(self, name: str) -> bool:
        return name in self.sets and all(c in self.sets[name].columns for c in TRUTH_COLUMNS)

    def validate(self) -> None:
        needed = {"forget": QA_COLUMNS, "retain": QA_COLUMNS} if self.kind is TaskKind.QA else {"forget": ("text",), "retain": ("text",)}
        for name, columns in needed.items():
            if name not in self.sets:
                raise DataError(f"data from {self.source!r} has no {name} set", f"provide a {name} file / config")
        for name, df in self.sets.items():
            if len(df) == 0:
                raise DataError(f"set {name} of {self.source!r} is empty", "give it at least one row (check limits)")
            columns = needed.get(name) or _expected_columns(name)
            missing = [c for c in columns if c not in df.columns]
            if missing:
                raise DataError(f"set {name} of {self.source!r} has no column {missing[0]!r}; columns are {list(df.columns)}",
                                f"rename the column to {missing[0]!r}")
            for col in columns:
                empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
                if empty.any():
                    raise DataError(f"set {name} of {self.source!r} has {int(empty.sum())} empty {col!r} value(s), first at row "
                                    f"{int(empty.to_numpy().nonzero()[0][0])}", "remove or fill those rows")
            if "perturbed_answer" in df.columns:
                bad = [i for i, v in enumerate(df["perturbed_answer"]) if not _as_list(v)]
                if bad:
                    raise DataError(f"set {name} row {bad[0]} has no perturbed answers", "give perturbed_answer as a non-empty list")
        key = "question" if self.kind is TaskKind.QA else "text"
        both = set(self.sets["forget"][key]) & set(self.sets["retain"][key])
        if both:
            raise DataError(f"{len(both)} {key}(s) are in both forget and retain (e.g. {next(iter(both))[:60]!r})",
                            "remove the duplicates from one of the two sets")

    def perturbed(self, name: str) -> list[list[str]]:
        """The perturbed answers of each row of set ``name`` as lists of strings."""
        return [_as_list(v) for v in self[name]["perturbed_answer"]]

    def fingerprint(self, name: str) -> str:
        """A content hash of one set: same rows in the same order give the same hash."""
        df = self[name]
        cols = sorted(df.columns)
        return sha256_text(name, *cols, *(json.dumps([_plain(row[c]) for c in cols]) for _, row in df.iterrows()))[:16]

    def fingerprints(self) -> dict[str, str]:
        return {name: self.fingerprint(name) for name in self.sets}

    def subsample(self, limits: dict[str, int], seed: int = 0) -> GenerationData:
        out = {}
        for name, df in self.sets.items():
            n = limits.get(name)
            out[name] = df if n is None or len(df) <= n else df.sample(n=n, random_state=seed).sort_index()
        return GenerationData(self.kind, out, source=f"{self.source} (subsample)")


def _expected_columns(name: str) -> tuple[str, ...]:
    if name.startswith("knowmem") or name in ("retain_eval", "real_authors", "world_facts", "general"):
        return QA_COLUMNS
    if name.startswith("verbmem"):
        return ("prompt", "gt")
    if name == "holdout":
        return ("text",)
    return ()


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _as_list(value) -> list[str]:
    """A perturbed-answer cell as a list of strings: a list, an array, or a JSON list stored as text."""
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                return [text]
        else:
            return [text] if text else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v).strip()]
    return [str(value)]


# ---------------------------------------------------------------------------------------------------------
# reading files


def read_records(path: str | os.PathLike) -> pd.DataFrame:
    """A JSON list (of objects or of strings: column ``text``) or any file ``read_table`` reads, as a table."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return read_table(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return read_table(path)  # JSON lines under a .json name, or a clear error
    if isinstance(obj, dict):  # {"question": [...], "answer": [...]} or {"data": [...]}
        obj = obj.get("data", obj)
    if isinstance(obj, list) and obj and all(isinstance(v, str) for v in obj):
        return pd.DataFrame({"text": obj})
    try:
        return pd.DataFrame(obj)
    except ValueError as err:
        raise DataError(f"data file {str(path)!r} could not be parsed ({str(err).splitlines()[0]})", "check that it is a JSON list of records") from None


def _find(folder: Path, stem: str) -> Path | None:
    """The file in ``folder`` whose stem is ``stem`` (any supported suffix); an error if there are several."""
    matches = [folder / f"{stem}{s}" for s in FILE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if len(matches) > 1:
        raise DataError(f"folder {str(folder)!r} has several files for {stem}: {[m.name for m in matches]}", "keep one of them")
    return matches[0] if matches else None


# ---------------------------------------------------------------------------------------------------------
# TOFU


def retain_split_for(forget_split: str) -> str:
    """TOFU's retain set that complements a forget split: forget10 -> retain90."""
    from spul.data.generated_text import forget_fraction

    return f"retain{100 - round(100 * forget_fraction(forget_split)):02d}"


def _tofu_tables(read, forget_split: str, origin: str) -> dict[str, pd.DataFrame]:
    """``read(config_name) -> DataFrame | None`` gives TOFU's configs; assemble the named sets."""
    retain_split = retain_split_for(forget_split)
    forget = read(f"{forget_split}_perturbed")
    if forget is None:
        forget = read(forget_split)
    retain = read(retain_split)
    if forget is None or retain is None:
        missing = forget_split if forget is None else retain_split
        raise DataError(f"{origin} has no {missing} set", f"provide {missing}.json(l) (TOFU's config names) or pick another forget split")
    sets = {"forget": forget, "retain": retain}
    for name, config in (("retain_eval", "retain_perturbed"), ("real_authors", "real_authors_perturbed"), ("world_facts", "world_facts_perturbed")):
        table = read(config)
        if table is not None:
            sets[name] = table
    return sets


def load_tofu_folder(folder: str | os.PathLike, forget_split: str = "forget10") -> GenerationData:
    folder = Path(folder)

    def read(name: str):
        path = _find(folder, name)
        return read_records(path) if path else None

    return GenerationData(TaskKind.QA, _tofu_tables(read, forget_split, str(folder)), source=str(folder))


def load_tofu_hub(name: str = "locuslab/TOFU", forget_split: str = "forget10", revision: str | None = None) -> GenerationData:
    import datasets

    try:
        configs = set(datasets.get_dataset_config_names(name, revision=revision))
    except Exception as err:  # noqa: BLE001 - the hub client raises many types; all mean "can't get it"
        raise DataError(f"could not read hub data set {name!r} ({type(err).__name__})",
                        "check the name and your network, or download it and pass the local folder as data.source") from None

    def read(config: str):
        if config not in configs:
            return None
        return datasets.load_dataset(name, config, split="train", revision=revision).to_pandas()

    return GenerationData(TaskKind.QA, _tofu_tables(read, forget_split, f"hub:{name}"), source=f"hub:{name}:{forget_split}")


# ---------------------------------------------------------------------------------------------------------
# MUSE

# our set name -> MUSE (config, split) candidates, first found wins
MUSE_SETS: dict[str, tuple[tuple[str, str], ...]] = {
    "forget": (("raw", "forget"), ("privleak", "forget")),
    "retain": (("raw", "retain1"), ("raw", "retain"), ("privleak", "retain")),
    "holdout": (("privleak", "holdout"), ("raw", "holdout")),
    "verbmem_forget": (("verbmem", "forget"),),
    "knowmem_forget": (("knowmem", "forget_qa"),),
    "knowmem_retain": (("knowmem", "retain_qa"),),
}


def _muse_tables(read, origin: str) -> dict[str, pd.DataFrame]:
    sets = {}
    for ours, candidates in MUSE_SETS.items():
        for config, split in candidates:
            table = read(config, split)
            if table is not None:
                sets[ours] = table
                break
    if "forget" not in sets or "retain" not in sets:
        raise DataError(f"{origin} has no forget and retain passages", "provide raw/forget.json and raw/retain1.json (MUSE's layout)")
    return sets


def load_muse_folder(folder: str | os.PathLike) -> GenerationData:
    folder = Path(folder)

    def read(config: str, split: str):
        path = _find(folder / config, split)
        return read_records(path) if path else None

    return GenerationData(TaskKind.COMPLETION, _muse_tables(read, str(folder)), source=str(folder))


def load_muse_hub(name: str = "muse-bench/MUSE-News", revision: str | None = None) -> GenerationData:
    import datasets

    def read(config: str, split: str):
        try:
            return datasets.load_dataset(name, config, split=split, revision=revision).to_pandas()
        except ValueError:  # that config or split does not exist
            return None
        except Exception as err:  # noqa: BLE001 - network / hub errors
            raise DataError(f"could not read hub data set {name!r} ({type(err).__name__})",
                            "check the name and your network, or download it and pass the local folder as data.source") from None

    return GenerationData(TaskKind.COMPLETION, _muse_tables(read, f"hub:{name}"), source=f"hub:{name}")


# ---------------------------------------------------------------------------------------------------------
# dispatch


def _folder_format(folder: Path) -> str:
    if any((folder / d).is_dir() for d in ("raw", "verbmem", "knowmem", "privleak")):
        return "muse"
    if any(_find(folder, f"forget{n}") or _find(folder, f"forget{n}_perturbed") for n in ("01", "05", "10")):
        return "tofu"
    stems = sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in FILE_SUFFIXES)
    raise DataError(f"folder {str(folder)!r} is neither TOFU-style (forget10.jsonl, retain90.jsonl …) nor MUSE-style "
                    f"(raw/, verbmem/, knowmem/, privleak/); it has {stems[:6]}", "name the files as TOFU or MUSE does, or set data.format")


def load_generation_data(cfg: GenerationDataConfig) -> GenerationData:
    """Load, validate and (optionally) subsample a generative data set."""
    source = cfg.source.strip()
    if source.startswith("generated:"):
        from spul.data import generated_text

        name = source.split(":", 1)[1]
        if name == "authors":
            options = {"forget": cfg.forget_split, **cfg.generator}
            data = GenerationData(TaskKind.QA, _call(generated_text.generate_authors, cfg.seed, options, source), source=f"{source}:{options['forget']}")
        elif name == "passages":
            data = GenerationData(TaskKind.COMPLETION, _call(generated_text.generate_passages, cfg.seed, cfg.generator, source), source=source)
        else:
            raise DataError(f"unknown generative data set {source!r}", f"use one of {', '.join('generated:' + g for g in GENERATED)}")
    else:
        local = Path(os.path.expanduser(source.removeprefix("local:")))
        if local.is_dir():
            fmt = cfg.format if cfg.format != "auto" else _folder_format(local)
            data = load_tofu_folder(local, cfg.forget_split) if fmt == "tofu" else load_muse_folder(local)
        elif local.is_file():
            raise DataError(f"data.source {source!r} is a single file, but generative unlearning needs forget and retain sets",
                            "pass the folder holding them")
        elif source.startswith("hub:") or (source.count("/") == 1 and not source.startswith((".", "/", "~"))):
            name = source.removeprefix("hub:")
            fmt = cfg.format if cfg.format != "auto" else ("muse" if "muse" in name.lower() else "tofu")
            data = load_tofu_hub(name, cfg.forget_split, cfg.revision) if fmt == "tofu" else load_muse_hub(name, cfg.revision)
        else:
            raise DataError(f"data.source {source!r} is neither a folder, a hub name nor a generated set",
                            "check the path, or use generated:authors / hub:locuslab/TOFU")
    return data.subsample(cfg.limits, cfg.seed) if cfg.limits else data


def _call(fn, seed: int, options: dict, source: str) -> dict[str, pd.DataFrame]:
    try:
        return fn(seed=seed, **options)
    except TypeError as err:
        raise ConfigError(f"{source} got an unknown option ({err})", f"see the parameters of spul.data.generated_text.{fn.__name__}") from None
