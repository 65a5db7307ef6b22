"""Run every cell of an experiment, caching each finished cell, and write tables, CSV and figures.

Layout under ``output_dir``:

    shared/             prepared data + the familiarised base model (once per experiment)
    cells/<id>.json     one finished cell (written atomically; its presence with the same key = skip)
    work/<id>/          the cell's artifact (soft prompt or baseline adapter) and evaluation cache
    results.json|csv|md the whole experiment; figures/*.png

An interrupted run resumes: finished cells are read back, the others are computed.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from spul.configuration import dump_yaml, to_dict
from spul.data.encoding import TaskEncoder
from spul.data.splits import SPLITS, Split, UnlearningData
from spul.data.tasks import Task
from spul.errors import ConfigError
from spul.evaluation.evaluate import ModelResult, evaluate_model
from spul.experiments.config import ExperimentConfig, MethodSpec
from spul.experiments.measure import measure
from spul.io import read_json, sha256_text, write_json, write_text

log = logging.getLogger(__name__)

REFERENCE = "reference"


@dataclass
class Cell:
    """One unit of work: a method at one grid point and one forget fraction τ."""

    id: str
    method: str
    kind: str
    params: dict[str, Any]
    tau: float
    spec: MethodSpec | None = None

    @property
    def display(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        if self.tau < 1:
            inner = ", ".join(x for x in (inner, f"τ={self.tau:g}") if x)
        return f"{self.method} ({inner})" if inner else self.method


@dataclass
class ExperimentOutcome:
    cells: list[dict[str, Any]]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    output_dir: Path = Path(".")
    # (index, count) when this run computed only its share of the cells (no report written), else None
    shard: tuple[int, int] | None = None
    others: list[str] = field(default_factory=list)  # cells left to the other shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (Slurm: ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        index = count = None
    if index is None or count is None or count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r} is not I/N with 0 <= I < N",
                          "pass e.g. --shard 0/4 ... --shard 3/4 (Slurm: --array=0-3 and --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return index, count


def shard_cells(cells: list, index: int, count: int) -> list:
    """The cells of shard ``index`` of ``count``: every ``count``-th cell of the (deterministic) plan, from ``index``."""
    return [cell for j, cell in enumerate(cells) if j % count == index]


def cached_cell(path: Path, key: Callable[[], str]) -> dict[str, Any] | None:
    """The cell record at ``path`` when its ``key`` matches ``key()`` (computed only when the file exists); None for a
    missing, damaged or stale file, so the cell is recomputed. Shared by the label and the generative runners."""
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except ValueError:
        return None  # a damaged cell file is recomputed
    return record if record.get("key") == key() else None


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z.=-]+", "_", text).strip("_").lower()


def plan_cells(cfg: ExperimentConfig) -> list[Cell]:
    cells = []
    for spec in cfg.methods:
        for point in spec.points():
            for tau in cfg.forget_fractions:
                parts = [spec.name] + [f"{k}={v}" for k, v in point.items()] + ([f"tau={tau:g}"] if len(cfg.forget_fractions) > 1 or tau < 1 else [])
                cells.append(Cell(id=_slug("-".join(parts)), method=spec.name, kind=spec.kind, params=dict(point), tau=tau, spec=spec))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        from spul.errors import ConfigError

        raise ConfigError("two cells of the experiment get the same id", "give methods distinct names and grids distinct values")
    return cells


def forget_subset(data: UnlearningData, tau: float, seed: int) -> UnlearningData:
    """``data`` with train_forget reduced to a seeded τ fraction (label-stratified); τ=1 returns ``data``."""
    if tau >= 1:
        return data
    n = max(1, round(len(data[Split.TRAIN_FORGET]) * tau))
    return data.subsample({Split.TRAIN_FORGET.value: n}, seed=seed)


def _derived(model_cfg, path: str):
    from spul.models.loading import ModelConfig

    fields = to_dict(model_cfg)
    fields["name_or_path"] = path
    return ModelConfig(**fields)


class ExperimentRunner:
    def __init__(self, cfg: ExperimentConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.say = progress or (lambda msg: log.info(msg))
        self.task = Task(cfg.task)
        self.run_cfg = cfg.run_config(str(self.out / "shared"))
        self._data: UnlearningData | None = None
        self._base: str | None = None

    # -- shared steps ------------------------------------------------------------------------------------
    def shared(self) -> tuple[UnlearningData, str]:
        from spul import pipeline

        if self._data is None:
            self._data = pipeline.prepare(self.run_cfg)
            with measure() as cost:
                self._base = pipeline.finetune(self.run_cfg, self._data)
            self.finetune_seconds = cost.seconds
        return self._data, self._base

    def _key(self, cell: Cell) -> str:
        data, base = self.shared()
        from spul.resume import stable_settings

        settings = stable_settings(to_dict(cell.spec.method_config(cell.params))) if cell.spec else {}
        return sha256_text(cell.kind, repr(settings), repr(cell.tau), repr(data.fingerprints()), base,
                           repr(to_dict(self.cfg.model)), repr(to_dict(self.cfg.task)), repr(to_dict(self.cfg.evaluation.splits)))[:20]

    def cell_path(self, cell_id: str) -> Path:
        return self.out / "cells" / f"{cell_id}.json"

    def cached(self, cell: Cell) -> dict[str, Any] | None:
        return cached_cell(self.cell_path(cell.id), lambda: self._key(cell))

    # -- cells ----------------------------------------------------------------------------------------------
    def reference_cells(self) -> list[Cell]:
        cells = []
        if self.cfg.evaluation.include_vanilla and self.cfg.finetune.enabled:
            cells.append(Cell(id="vanilla", method="Vanilla (zero-shot)", kind=REFERENCE, params={}, tau=1.0))
        name = "Base (familiarized)" if self.cfg.finetune.enabled else "Base"
        cells.append(Cell(id="base", method=name, kind=REFERENCE, params={}, tau=1.0))
        return cells

    def compute(self, cell: Cell) -> dict[str, Any]:
        from spul.artifacts import read_metadata
        from spul.methods.registry import TrainJob, get_method, load_intervention
        from spul.models.loading import load_model, weights_fingerprint
        from spul.resume import StaleCheckpoints

        data, base = self.shared()
        started = time.perf_counter()
        info: dict[str, Any] = {}
        if cell.kind == REFERENCE:
            path = self.cfg.model.name_or_path if cell.id == "vanilla" else base
            model, tok = load_model(_derived(self.cfg.model, path))
            result = self._evaluate(model, tok, cell.method, weights_fingerprint(model), cell.id)
            info["trainable_parameters"] = 0
        else:
            work = self.out / "work" / cell.id
            train_data = forget_subset(data, cell.tau, self.cfg.data.seed)
            mcfg = cell.spec.method_config(cell.params)
            method = get_method(cell.spec.method)
            job = TrainJob(model=_derived(self.cfg.model, base), task=self.task, data=train_data, config=mcfg,
                           artifact_dir=work / "artifact", work_dir=work / "unlearn", pretrained_model=self.cfg.model.name_or_path)
            with measure() as cost:
                try:
                    artifact = method.train(job)
                except StaleCheckpoints:  # a changed setting recomputes the cell: its work folder is scratch space
                    job.resume = False
                    artifact = method.train(job)
            meta = read_metadata(artifact)
            model, tok = load_model(_derived(self.cfg.model, base))
            intervention = load_intervention(artifact, model, tokenizer=tok, model_name=base, name=cell.display)
            result = self._evaluate(model, tok, cell.display, meta["created"] + cell.id, cell.id, intervention)
            training = meta.get("training", {})
            train_seconds = float(training.get("seconds", training.get("classifier_seconds", 0.0) + training.get("search_seconds", 0.0)))
            info.update({
                "artifact": str(artifact),
                "trainable_parameters": int(meta.get("trainable_parameters", 0)),
                "train_seconds": round(train_seconds, 2),
                "seconds_per_epoch": round(train_seconds / float(getattr(mcfg, "num_epochs", 1.0)), 2),
                "steps": training.get("steps", len(meta.get("search", {}).get("log", []))),
                "train_rows": train_data.sizes(),
                "peak_memory_mb": cost.peak_memory_mb,
                "memory_kind": cost.memory_kind,
                "settings": to_dict(mcfg),
            })
            if "flags" in result.info:
                info["flags"] = result.info["flags"]
            if "corruption" in meta:
                info["sigma"] = meta["corruption"]["sigma"]
        info["wall_seconds"] = round(time.perf_counter() - started, 2)
        return {"id": cell.id, "key": self._key(cell), "method": cell.method, "kind": cell.kind, "params": cell.params,
                "tau": cell.tau, "name": cell.display, "result": result.as_dict(), "info": info}

    def _evaluate(self, model, tokenizer, name: str, identity: str, cell_id: str, intervention=None) -> ModelResult:
        data, _ = self.shared()
        encoder = TaskEncoder(self.task, tokenizer, self.cfg.model.max_length)
        return evaluate_model(model, encoder, data, self.cfg.evaluation, name=name, identity=identity, intervention=intervention,
                              cache_dir=self.out / "work" / cell_id / "cache")

    # -- the whole experiment -------------------------------------------------------------------------------
    def run(self, shard: tuple[int, int] | None = None, shared_only: bool = False) -> ExperimentOutcome:
        """Every cell, then the report. ``shard=(I, N)``: only shard I's cells (``shard_cells``), no report; a later
        run without a shard reads all cell files back (same keys) and writes the report. ``shared_only``: only
        the steps every cell shares (data, fine-tune), to run once before an array of shards."""
        outcome = run_share(self, lambda: self.reference_cells() + plan_cells(self.cfg), shard, shared_only)
        if shard is not None or shared_only:
            return outcome  # the report needs every cell: a run without --shard merges them
        mark_selected(outcome.cells, self.cfg.selection.max_retain_drop)
        self.write_outputs(outcome)
        return outcome

    def write_outputs(self, outcome: ExperimentOutcome) -> None:
        from spul.evaluation import figures, tables

        cells = outcome.cells
        write_json(self.out / "results.json", {"experiment": self.cfg.name, "config": self.cfg.as_dict(), "cells": cells,
                                               "selection_rule": selection_rule(self.cfg.selection.max_retain_drop)})
        write_text(self.out / "results.csv", cells_csv(cells))
        md = tables.experiment_markdown(self.cfg.name, cells, selection_rule(self.cfg.selection.max_retain_drop), self._data.sizes())
        manifest = self.run_cfg.out / "data" / "manifest.json"
        if manifest.is_file():
            from spul.evaluation.report import leakage_note

            md = md.rstrip("\n") + leakage_note(read_json(manifest).get("leakage")) + "\n"
        write_text(self.out / "results.md", md)
        if self.cfg.figures:
            figures.experiment_figures(cells, self.out / "figures")
        if self.cfg.tsne:
            self.tsne(cells)

    def tsne(self, cells: list[dict[str, Any]]) -> Path | None:
        """t-SNE of last-layer representations with and without the soft prompt of the first selected cell
        whose intervention is a plain soft prompt (SPUL's)."""
        from spul.evaluation.figures import tsne_figure
        from spul.interventions import Gated
        from spul.methods.registry import load_intervention
        from spul.models.loading import load_model, weights_fingerprint

        data, base = self.shared()
        model, tok = load_model(_derived(self.cfg.model, base))
        model_key = weights_fingerprint(model)
        for cell in cells:
            if cell["kind"] == REFERENCE or not cell.get("selected") or "artifact" not in cell["info"]:
                continue
            intervention = load_intervention(cell["info"]["artifact"], model, tokenizer=tok, fingerprint=model_key)
            if intervention.vectors is None or intervention.changes_weights or isinstance(intervention, Gated):
                continue
            encoder = TaskEncoder(self.task, tok, self.cfg.model.max_length)
            return tsne_figure(model, encoder, data, self.out / "figures" / "tsne.png", title=cell["name"], vectors=intervention.vectors,
                               model_key=model_key, prompt_key=intervention.identity)
        return None


def run_share(runner, plan: Callable[[], list[Cell]], shard: tuple[int, int] | None, shared_only: bool) -> ExperimentOutcome:
    """What every run of an experiment does before its report (label and generative runners): write the config (first
    shard only), run the shared steps, then this shard's cells of ``plan()`` (all of them without a shard; none with
    ``shared_only``), each read back or computed by ``run_cells``. ``outcome.others`` lists the cells left to others."""
    runner.out.mkdir(parents=True, exist_ok=True)
    if shard is None or shard[0] == 0:
        write_text(runner.out / "config.yaml", dump_yaml(runner.cfg))
    runner.shared()
    outcome = ExperimentOutcome(cells=[], output_dir=runner.out, shard=shard)
    cells = plan()
    if shared_only:
        outcome.others = [c.id for c in cells]
        return outcome
    if shard is not None:
        mine = shard_cells(cells, *shard)
        outcome.others = [c.id for c in cells if c.id not in {m.id for m in mine}]
        cells = mine
    run_cells(runner, cells, outcome)
    return outcome


def run_cells(runner, cells: list[Cell], outcome: ExperimentOutcome) -> None:
    """Each cell read back (``runner.cached``: same key) or computed (``runner.compute``) and written to
    ``runner.cell_path``; progress through ``runner.say``. Shared by the label and the generative runners."""
    for i, cell in enumerate(cells, 1):
        record = runner.cached(cell)
        if record is not None:
            record["name"] = cell.display  # names may be improved between versions without recomputing
            outcome.skipped.append(cell.id)
            runner.say(f"[{i}/{len(cells)}] {cell.id}: cached")
        else:
            runner.say(f"[{i}/{len(cells)}] {cell.id}: running")
            record = runner.compute(cell)
            write_json(runner.cell_path(cell.id), record)
            outcome.computed.append(cell.id)
            runner.say(f"[{i}/{len(cells)}] {cell.id}: done in {record['info']['wall_seconds']:.0f} s")
        outcome.cells.append(record)


def selection_rule(max_drop: float) -> str:
    return (f"per method (and τ), the grid cell with the lowest test-forget accuracy among those whose test-retain accuracy is at most "
            f"{max_drop:g} points below the base model's; if none qualifies, the cell with the highest test-retain accuracy")


def _acc(cell: dict[str, Any], split: str) -> float:
    return float(cell["result"]["metrics"][split]["accuracy"])


def mark_selected(cells: list[dict[str, Any]], max_retain_drop: float) -> None:
    """Set ``selected`` on the best cell of each (method, τ) group; see ``SelectionConfig``."""
    base = next((c for c in cells if c["id"] == "base"), None)
    floor = _acc(base, "test_retain") - max_retain_drop / 100 if base else -1.0
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for c in cells:
        c["selected"] = c["kind"] == REFERENCE
        if c["kind"] != REFERENCE:
            groups.setdefault((c["method"], c["tau"]), []).append(c)
    for group in groups.values():
        ok = [c for c in group if _acc(c, "test_retain") >= floor - 1e-9]
        best = min(ok, key=lambda c: (_acc(c, "test_forget"), -_acc(c, "test_retain"))) if ok else max(group, key=lambda c: _acc(c, "test_retain"))
        best["selected"] = True


def cells_csv(cells: list[dict[str, Any]]) -> str:
    param_keys = sorted({k for c in cells for k in c["params"]})
    head = ["id", "method", "kind", "tau", "selected"] + [f"param_{k}" for k in param_keys]
    for s in SPLITS:
        head += [f"acc_{s.value}", f"f1_{s.value}", f"generic_{s.value}"]
    head += ["trainable_parameters", "train_seconds", "seconds_per_epoch", "peak_memory_mb", "memory_kind", "wall_seconds"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head)
    for c in cells:
        row = [c["id"], c["method"], c["kind"], c["tau"], c.get("selected", False)] + [c["params"].get(k, "") for k in param_keys]
        for s in SPLITS:
            m = c["result"]["metrics"].get(s.value)
            row += [m["accuracy"], m["f1_weighted"], m["generic_rate"]] if m else ["", "", ""]
        row += [c["info"].get(k, "") for k in ("trainable_parameters", "train_seconds", "seconds_per_epoch", "peak_memory_mb", "memory_kind", "wall_seconds")]
        writer.writerow(row)
    return buf.getvalue()


def run_experiment(cfg: ExperimentConfig, progress: Callable[[str], None] | None = None,
                   shard: tuple[int, int] | None = None, shared_only: bool = False) -> ExperimentOutcome:
    return ExperimentRunner(cfg, progress).run(shard, shared_only)


def load_finished(folder: str | Path) -> tuple[dict[str, Any], ExperimentConfig]:
    """The ``results.json`` of a finished experiment in ``folder`` and the config it ran with (scripts that
    audit or re-score its cells start here; ``config.run_config(folder / "shared")`` is its shared run)."""
    from spul.configuration import from_dict

    path = Path(folder) / "results.json"
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} is missing", "run `spul experiment` for that experiment first")
    results = read_json(path)
    return results, from_dict(ExperimentConfig, results["config"])
