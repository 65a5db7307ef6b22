"""Experiments on generative data (task kind ``qa`` or ``completion``): methods × grid cells against one familiarised
model and one retain-only reference, reported as one TOFU-style table (MUSE-style for passages).

    spul experiment -c experiments/tofu_authors_cpu          # any config whose task.kind is qa / completion

Layout under ``output_dir``:

    shared/             the generative run's shared steps: data manifest, familiarized/ and retain_only/ models,
                        the familiarised model's own answers to the general set, the reference evaluations' cache
    cells/<id>.json     one finished cell: its key and its per-example records (written atomically)
    work/<id>/          the cell's artifact (SPUL) or unlearned model (weight methods), checkpoints, evaluation cache
    results.json|csv|md the whole experiment; fq_vs_utility.png (qa)

A cell is reused only when its file's key matches: the method and its settings, the data's fingerprints, the two
reference models' keys, the model, task and evaluation settings. Cells store per-example records, so the report
(forget quality against the retain-only model, utility, selection) is recomputed from them at every merge.
Methods are dispatched by ``spul.pipeline_generation.unlearn``: every method ``GenerationRunConfig`` accepts runs
here without a change to this file. ``--shard I/N`` and ``--shared-only`` work as for label experiments.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from spul.configuration import to_dict
from spul.data.generative_sources import GenerationDataConfig
from spul.data.tasks import GenerationTaskConfig
from spul.errors import ConfigError
from spul.experiments.config import MethodSpec
from spul.experiments.measure import measure
from spul.experiments.runner import Cell, ExperimentOutcome, cached_cell, plan_cells, run_share
from spul.io import sha256_text, write_text
from spul.methods.finetune.config import FinetuneConfig
from spul.models.config import ModelConfig
from spul.run_config_generation import GenerationEvaluation, GenerationRunConfig

log = logging.getLogger(__name__)


@dataclass
class GenerationSelection:
    """Which cell of a method's grid the table marks as selected.

    qa: among the cells whose model utility is at least ``(1 - max_utility_drop)`` × the familiarised model's, the
    one with the highest forget quality (ties: higher utility); if none qualifies, the highest utility. Passages: the
    same with KnowMem retain for utility and the lowest VerbMem forget for forgetting.
    """

    max_utility_drop: float = field(default=0.2, metadata={"help": "largest relative utility drop a selected cell may have (0.2 = 20 %)"})

    def __post_init__(self) -> None:
        if not 0 <= self.max_utility_drop <= 1:
            raise ConfigError(f"selection.max_utility_drop={self.max_utility_drop} is not a fraction in [0, 1]", "use e.g. 0.2")


@dataclass
class GenerationExperimentConfig:
    """One YAML file per generative experiment: the shared model, data and fine-tunes, and the methods with their grids."""

    name: str = "generation_experiment"
    output_dir: str = "runs/generation_experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: GenerationTaskConfig = field(default_factory=GenerationTaskConfig)
    data: GenerationDataConfig = field(default_factory=GenerationDataConfig)
    max_answer_length: int = field(default=48, metadata={"help": "answer tokens trained and scored (EOS included)"})
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, metadata={"help": "the familiarisation and retain-only fine-tunes"})
    general_retain: bool = field(default=True, metadata={"help": "train on the data's general set as retain rows (see GenerationRunConfig)"})
    evaluation: GenerationEvaluation = field(default_factory=GenerationEvaluation)
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec(name="SPUL")])
    selection: GenerationSelection = field(default_factory=GenerationSelection)

    def __post_init__(self) -> None:
        if not str(self.output_dir).strip():
            raise ConfigError("output_dir is empty", "set output_dir to a folder for the experiment's files")
        if not self.methods:
            raise ConfigError("the experiment lists no methods", "add at least one entry under methods:")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ConfigError(f"method names repeat: {names}", "give every method a distinct name")
        self.run_config("validate")  # the shared settings
        for spec in self.methods:  # every cell's method must have generative training (refused before any work)
            for point in spec.points():
                try:
                    self.run_config("validate", spec.method_config(point))
                except ConfigError as err:
                    raise ConfigError(f"methods[{spec.name}]: {err.problem}", err.fix) from None

    @property
    def forget_fractions(self) -> list[float]:
        """One forget set per experiment (the data's forget split); ``plan_cells`` of the label runner reads this."""
        return [1.0]

    def run_config(self, output_dir: str, unlearn: Any = None) -> GenerationRunConfig:
        """The ``GenerationRunConfig`` of the shared steps (``unlearn`` None) or of one cell."""
        return GenerationRunConfig(output_dir=output_dir, model=self.model, task=self.task, data=self.data,
                                   max_answer_length=self.max_answer_length, finetune=self.finetune, retain_only=True,
                                   general_retain=self.general_retain, unlearn=unlearn, evaluation=self.evaluation)

    def as_dict(self) -> dict[str, Any]:
        return to_dict(self)


class GenerationExperimentRunner:
    def __init__(self, cfg: GenerationExperimentConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.say = progress or (lambda msg: log.info(msg))
        self.run_cfg = cfg.run_config(str(self.out / "shared"))
        self._shared: tuple | None = None
        self._base_model = None
        self._unlearning_data = None

    # -- shared steps ------------------------------------------------------------------------------------
    def shared(self):
        """``(data, familiarised model path, retain-only model path)``: prepared and trained once, reused by key."""
        from spul import pipeline_generation as pg

        if self._shared is None:
            data = pg.prepare(self.run_cfg)
            base = pg.train_reference(self.run_cfg, data, "familiarized")
            reference = pg.train_reference(self.run_cfg, data, "retain_only")
            self._shared = (data, base, reference)
        return self._shared

    def base_model(self):
        from spul import pipeline_generation as pg
        from spul.models.loading import load_model

        if self._base_model is None:
            self._base_model = load_model(pg._model_config(self.run_cfg, self.shared()[1]))
        return self._base_model

    def unlearning_data(self):
        """The data the methods train on (the general set answered by the familiarised model, once for every cell)."""
        from spul import pipeline_generation as pg

        if self._unlearning_data is None:
            self._unlearning_data = pg.unlearning_view(self.run_cfg, self.shared()[0], *self.base_model())
        return self._unlearning_data

    def _shared_key(self) -> list[str]:
        from spul import pipeline_generation as pg
        from spul import resume as resume_keys

        data, _, _ = self.shared()
        stamps = [resume_keys.resume_key(pg.reference_inputs(self.run_cfg, pg.training_view(self.run_cfg, data), w)) for w in (True, False)]
        return [repr(data.fingerprints()), *stamps, repr(to_dict(self.cfg.model)), repr(to_dict(self.cfg.task)), repr(self.cfg.max_answer_length),
                repr(self.cfg.general_retain), repr(to_dict(self.cfg.evaluation))]

    def _key(self, cell: Cell) -> str:
        from spul.resume import stable_settings

        settings = stable_settings(to_dict(cell.spec.method_config(cell.params)))  # settings added later, while off, keep old keys
        return sha256_text(cell.spec.method, repr(settings), *self._shared_key())[:20]

    def cell_path(self, cell_id: str) -> Path:
        return self.out / "cells" / f"{cell_id}.json"

    def cached(self, cell: Cell) -> dict[str, Any] | None:
        return cached_cell(self.cell_path(cell.id), lambda: self._key(cell))

    # -- one cell -------------------------------------------------------------------------------------------
    def compute(self, cell: Cell) -> dict[str, Any]:
        from spul import pipeline_generation as pg
        from spul.resume import StaleCheckpoints

        data, base, reference = self.shared()
        started = time.perf_counter()
        mcfg = cell.spec.method_config(cell.params)
        work = self.out / "work" / cell.id
        ccfg = self.cfg.run_config(str(work), mcfg)
        udata = self.unlearning_data()
        with measure() as cost:
            try:
                artifact = pg.unlearn(ccfg, udata, base, retain_only=reference)
            except StaleCheckpoints:  # a changed setting recomputes the cell: its work folder is scratch space
                artifact = pg.unlearn(ccfg, udata, base, resume=False, retain_only=reference)
        _, records = pg.artifact_records(ccfg, data, base, artifact, self.base_model(), cache_dir=work / "cache", name=cell.display)
        info = {"artifact": str(artifact), "train_seconds": round(cost.seconds, 2), "peak_memory_mb": cost.peak_memory_mb,
                "memory_kind": cost.memory_kind, "settings": to_dict(mcfg), "wall_seconds": round(time.perf_counter() - started, 2)}
        return {"id": cell.id, "key": self._key(cell), "method": cell.method, "registered": cell.spec.method, "params": cell.params,
                "name": cell.display, "records": records, "info": info}

    # -- the whole experiment -------------------------------------------------------------------------------
    def run(self, shard: tuple[int, int] | None = None, shared_only: bool = False) -> ExperimentOutcome:
        """Every cell, then the report; ``shard=(I, N)`` computes only shard I's cells (no report), ``shared_only``
        only the data and the two reference models."""
        outcome = run_share(self, lambda: plan_cells(self.cfg), shard, shared_only)
        if shard is None and not shared_only:
            self.write_outputs(outcome)
        return outcome

    def rows(self, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Report rows: the familiarised base, the retain-only reference, then every cell (``selected`` marked)."""
        from spul import pipeline_generation as pg

        data, base, reference = self.shared()
        states = pg.reference_records(self.run_cfg, data, base, reference, self.base_model())
        ref_records = states[1][1]
        rows = pg.build_rows(data, states, ref_records)
        for row, rid in zip(rows, ("base", "retain_only")):
            row.update({"id": rid, "kind": "reference", "selected": True})
        for cell in cells:
            rows.append({"method": cell["name"], "id": cell["id"], "kind": cell["registered"], "group": cell["method"], "params": cell["params"],
                         **pg.summarise_state(data, cell["records"], ref_records), "examples": pg.example_rows(data, cell["records"]),
                         "info": cell["info"]})
        mark_selected(rows, self.cfg.selection.max_utility_drop)
        return rows

    def write_outputs(self, outcome: ExperimentOutcome) -> list[dict[str, Any]]:
        from spul import pipeline_generation as pg

        data = self.shared()[0]
        rows = self.rows(outcome.cells)
        md = pg.write_report(self.run_cfg, data, rows, self.out, title=self.cfg.name,
                             extra={"experiment": self.cfg.name, "config": self.cfg.as_dict(),
                                    "selection_rule": selection_rule(self.cfg.selection.max_utility_drop, data.kind.value)})
        picked = [r["method"] for r in rows if r.get("selected") and r.get("kind") != "reference"]
        write_text(md, md.read_text(encoding="utf-8") + f"\nSelected per method ({selection_rule(self.cfg.selection.max_utility_drop, data.kind.value)}): "
                   + (", ".join(picked) or "none") + "\n")
        write_text(self.out / "results.csv", rows_csv(rows))
        return rows


def _metric_pair(kind: str) -> tuple[str, str, bool]:
    """``(utility metric, forgetting metric, higher forgetting metric is better)`` of a data kind."""
    return ("knowmem_retain", "verbmem_forget", False) if kind == "completion" else ("model_utility", "forget_quality", True)


def selection_rule(max_drop: float, kind: str = "qa") -> str:
    utility, forgetting, higher = _metric_pair(kind)
    return (f"per method, the grid cell with the {'highest' if higher else 'lowest'} {forgetting} among those whose {utility} is at least "
            f"{1 - max_drop:g} × the familiarised model's; if none qualifies, the cell with the highest {utility}")


def mark_selected(rows: list[dict[str, Any]], max_utility_drop: float) -> None:
    """Set ``selected`` on the best cell of each method (``GenerationSelection``); reference rows stay selected."""
    kind = "qa" if any("model_utility" in r for r in rows) else "completion"
    utility, forgetting, higher = _metric_pair(kind)
    base = next((r for r in rows if r.get("id") == "base"), None)
    floor = (1 - max_utility_drop) * float(base.get(utility, 0.0)) if base else float("-inf")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") != "reference":
            r["selected"] = False
            groups.setdefault(r.get("group", r["method"]), []).append(r)

    def value(r: dict[str, Any], key: str) -> float:
        v = r.get(key)
        return float(v) if v is not None and v == v else float("-inf")

    for group in groups.values():
        ok = [r for r in group if value(r, utility) >= floor - 1e-12]
        if ok:
            best = max(ok, key=lambda r: ((value(r, forgetting) if higher else -value(r, forgetting)), value(r, utility)))
        else:
            best = max(group, key=lambda r: value(r, utility))
        best["selected"] = True


CSV_FIELDS = ("forget_quality", "ks_statistic", "model_utility", "rouge_forget", "rouge_retain", "verbmem_forget", "knowmem_forget",
              "knowmem_retain", "auc", "auc_retain_only", "priv_leak", "unique_token_ratio", "output_perplexity")


def rows_csv(rows: list[dict[str, Any]]) -> str:
    present = [f for f in CSV_FIELDS if any(f in r for r in rows)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "method", "kind", "selected", *present, "train_seconds", "wall_seconds"])
    for r in rows:
        info = r.get("info", {})
        writer.writerow([r.get("id", ""), r["method"], r.get("kind", ""), r.get("selected", False), *(r.get(f, "") for f in present),
                         info.get("train_seconds", ""), info.get("wall_seconds", "")])
    return buf.getvalue()


def run_generation_experiment(cfg: GenerationExperimentConfig, progress: Callable[[str], None] | None = None,
                              shard: tuple[int, int] | None = None, shared_only: bool = False) -> ExperimentOutcome:
    return GenerationExperimentRunner(cfg, progress).run(shard, shared_only)
