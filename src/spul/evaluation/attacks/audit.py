"""``spul audit``: attack an unlearning artifact and write ``audit.json`` + ``audit.md`` next to the run.

The audit runs the attacks of this package against the artifact (the unlearned model) and against the
same base model without it, on a reproducible subsample of the four splits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spul.configuration import to_dict
from spul.data.encoding import TaskEncoder
from spul.data.sources import load_unlearning_data
from spul.data.splits import Split, UnlearningData
from spul.data.tasks import Task
from spul.errors import ConfigError
from spul.evaluation.attacks.membership import SCORES, membership_aucs
from spul.evaluation.attacks.paraphrase import VARIANTS, variant_task
from spul.evaluation.attacks.relearn import accuracy, relearn_steps
from spul.evaluation.attacks.suite import FAMILIES, run_suite, suite_markdown
from spul.io import write_json, write_text

LIMIT_NOTE = (
    "Inference-time unlearning (SPUL, ECO) leaves the model's weights unchanged: whoever can run the base "
    "model without the soft prompt (or without the guard) gets the old behaviour back at once, with zero "
    "relearning steps. The forgetting holds only where the serving layer enforces the prompt, which is why "
    "`spul serve` attaches it on every request and never exposes the bare model."
)
REPORTED_SPLITS = (Split.TRAIN_FORGET, Split.TEST_FORGET, Split.TEST_RETAIN)


@dataclass
class AuditConfig:
    """What the audit measures; set with ``audit.KEY=VALUE`` on the command line or an ``audit:`` section."""

    limit: int = field(default=64, metadata={"help": "rows per split"})
    batch_size: int = field(default=16, metadata={"help": "rows per forward pass"})
    min_k: float = field(default=0.2, metadata={"help": "fraction k of the least likely tokens in Min-K% and Min-K%++"})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={"help": "re-phrasings of the queries to try"})
    relearn_samples: int = field(default=8, metadata={"help": "forget rows the relearning attack fine-tunes on"})
    relearn_max_steps: int = field(default=20, metadata={"help": "most relearning steps"})
    relearn_learning_rate: float = field(default=1e-4, metadata={"help": "learning rate of the relearning attack"})
    relearn_target: float = field(default=0.9, metadata={"help": "relearned when forget accuracy reaches this fraction of the base model's"})
    seed: int = field(default=0, metadata={"help": "seed of the row subsample, the relearning and the attack suite's pools"})
    families: list[str] = field(default_factory=lambda: list(FAMILIES), metadata={"help": "attack-suite families scored on their held-out pools (empty: skip the suite)"})
    entities: list[str] | None = field(default=None, metadata={"help": "entity names the entity family rewrites (default: the SST-2 recipe's names)"})
    paraphrase_model: str | None = field(default=None, metadata={"help": "a causal LM (packaged:NAME, hub id or folder) whose greedy, disk-cached "
                                                                   "rewrites join the paraphrase family (default: rule-based rewrites only)"})
    membership: bool = field(default=True, metadata={"help": "run the membership-inference attack"})
    relearn: bool = field(default=True, metadata={"help": "run the relearning attack"})

    def __post_init__(self) -> None:
        if self.limit < 2:
            raise ConfigError(f"audit.limit={self.limit} is too small", "use at least 2 rows per split (64 is typical)")
        if self.batch_size < 1:
            raise ConfigError(f"audit.batch_size={self.batch_size} is invalid", "use 1 or more")
        if not 0 < self.min_k <= 1:
            raise ConfigError(f"audit.min_k={self.min_k} is out of range", "use a fraction in (0, 1], e.g. 0.2")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ConfigError(f"audit.variants has unknown variant {bad[0]!r}", f"use some of: {', '.join(VARIANTS)}")
        if isinstance(self.families, str):
            self.families = [f for f in self.families.split(",") if f]
        bad = [f for f in self.families if f not in FAMILIES]
        if bad:
            raise ConfigError(f"audit.families has unknown family {bad[0]!r}", f"use some of: {', '.join(FAMILIES)}")
        if self.relearn_samples < 1 or self.relearn_max_steps < 0 or self.relearn_learning_rate <= 0:
            raise ConfigError("audit.relearn_samples/relearn_max_steps/relearn_learning_rate are invalid", "use positive values")
        if not 0 < self.relearn_target <= 1:
            raise ConfigError(f"audit.relearn_target={self.relearn_target} is out of range", "use a fraction in (0, 1]")


def _paraphraser(model: str | None):
    if not model:
        return None
    from spul.models.paraphrase import paraphraser_for

    return paraphraser_for(model)


@dataclass
class Subject:
    """A model as the attacker queries it: the frozen weights plus the intervention applied (None: nothing)."""

    name: str
    model: Any
    intervention: Any = None


def _rows(data: UnlearningData, split: Split) -> tuple[list[str], np.ndarray]:
    df = data[split]
    return df["text"].tolist(), df["label"].to_numpy().astype(int)


def load_subjects(run_cfg, artifact: Path) -> tuple[Subject, Subject, dict[str, Any], Any, bool]:
    """(without unlearning, with unlearning, metadata, tokenizer, weights_changed): one frozen model, queried
    without and with the artifact's intervention."""
    from spul.artifacts import read_metadata
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model

    meta = read_metadata(artifact)
    fields = to_dict(run_cfg.model)
    fields["name_or_path"] = meta["base_model"]
    model, tokenizer = load_model(ModelConfig(**fields))
    intervention = load_intervention(artifact, model, tokenizer=tokenizer, model_name=meta["base_model"])
    changed = bool(intervention.changes_weights)
    before = Subject("base weights" if changed else "without unlearning", model)
    after = Subject(f"{meta.get('method', '?')} weights" if changed else "with unlearning", model, intervention)
    return before, after, meta, tokenizer, changed


def run_audit(run_cfg, artifact: str | Path, cfg: AuditConfig | None = None, data: UnlearningData | None = None,
              out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run every attack on ``artifact`` and write the report; returns the report as a dict."""
    cfg = cfg or AuditConfig()
    artifact = Path(artifact)
    started = time.time()
    before, after, meta, tokenizer, weights_changed = load_subjects(run_cfg, artifact)
    data = (data or load_unlearning_data(run_cfg.data, Task(run_cfg.task))).subsample(cfg.limit, seed=cfg.seed)
    task_cfg = run_cfg.task
    encoder = TaskEncoder(Task(task_cfg), tokenizer, run_cfg.model.max_length)
    report: dict[str, Any] = {"artifact": str(artifact), "method": meta.get("method"), "base_model": meta.get("base_model"),
                              "sizes": data.sizes(), "config": to_dict(cfg)}

    # 1. membership inference: train_forget (members) vs test_forget (non-members)
    if cfg.membership:
        members, nonmembers = _rows(data, Split.TRAIN_FORGET), _rows(data, Split.TEST_FORGET)
        mia = {s.name: membership_aucs(s.model, encoder, members, nonmembers, s.intervention, cfg.min_k, cfg.batch_size) for s in (before, after)}
        report["membership_auc"] = {score: {"without_unlearning": mia[before.name][score], "with_unlearning": mia[after.name][score]} for score in SCORES}

    # 2. re-phrased queries
    variants: dict[str, Any] = {}
    for name in cfg.variants:
        variant = VARIANTS[name]
        enc = TaskEncoder(Task(variant_task(task_cfg, variant)), tokenizer, run_cfg.model.max_length)
        entry: dict[str, Any] = {"description": variant.description}
        for subject, key in ((before, "without_unlearning"), (after, "with_unlearning")):
            entry[key] = {}
            for split in REPORTED_SPLITS:
                texts, labels = _rows(data, split)
                entry[key][split.value] = accuracy(subject.model, enc, [variant.text(t) for t in texts], labels, cfg.batch_size, subject.intervention)
        variants[name] = entry
    report["paraphrase_accuracy"] = variants

    # 2b. the attack suite: each family's held-out pool on the test splits, against the no-attack row
    if cfg.families:
        from spul.data.attacks import default_entities

        report["attack_suite"] = run_suite(
            [("without_unlearning", before.model, before.intervention), ("with_unlearning", after.model, after.intervention)],
            {s.value: _rows(data, s) for s in (Split.TEST_FORGET, Split.TEST_RETAIN)}, task_cfg, tokenizer, run_cfg.model.max_length,
            list(cfg.families), cfg.entities if cfg.entities is not None else default_entities(), cfg.seed, cfg.batch_size,
            paraphraser=_paraphraser(cfg.paraphrase_model))
        if cfg.paraphrase_model:
            report["attack_suite_paraphraser"] = {"model": cfg.paraphrase_model, "identity": _paraphraser(cfg.paraphrase_model).identity}

    # 3. relearning
    forget_texts, forget_labels = _rows(data, Split.TRAIN_FORGET)
    probe = _rows(data, Split.TEST_FORGET)
    base_forget = accuracy(before.model, encoder, *probe, cfg.batch_size, before.intervention)
    unlearned_forget = accuracy(after.model, encoder, *probe, cfg.batch_size, after.intervention)
    relearn: dict[str, Any] = {"base_forget_accuracy": base_forget, "unlearned_forget_accuracy": unlearned_forget,
                               "weights_changed": weights_changed}
    if not cfg.relearn:
        relearn["skipped"] = True
    elif weights_changed:
        n = min(cfg.relearn_samples, len(forget_texts))
        relearn["fine_tuning"] = relearn_steps(after.model, encoder, (forget_texts[:n], forget_labels[:n]), probe,
                                               cfg.relearn_target * base_forget, cfg.relearn_max_steps,
                                               cfg.relearn_learning_rate, cfg.batch_size, cfg.seed, after.intervention)
    else:
        relearn["without_prompt"] = {"steps_to_target": 0, "forget_accuracy": base_forget,
                                     "note": "the frozen weights are intact: removing the prompt restores the base model's accuracy"}
    report["relearning"] = relearn
    report["limits"] = LIMIT_NOTE
    report["seconds"] = round(time.time() - started, 1)
    out = Path(out_dir) if out_dir else run_cfg.out / "audit" / artifact.name
    write_json(out / "audit.json", report)
    write_text(out / "audit.md", audit_markdown(report))
    report["report_dir"] = str(out)
    return report


def _f(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def audit_markdown(r: dict[str, Any]) -> str:
    lines = [f"# Audit of `{r['artifact']}` ({r['method']})", "", f"Base model: `{r['base_model']}`; rows per split: {r['sizes']}.", "",
             "## Membership inference (ROC AUC, members = train_forget, non-members = test_forget; 0.5 = undetectable)", "",
             "| score | without unlearning | with unlearning |", "|---|---|---|"]
    for score, v in r.get("membership_auc", {}).items():
        lines.append(f"| {score} | {_f(v['without_unlearning'])} | {_f(v['with_unlearning'])} |")
    if "membership_auc" not in r:
        lines.append("| (skipped: audit.membership=false) | | |")
    lines += ["", "## Re-phrased queries (accuracy; forget splits should stay low with unlearning)", "",
              "| variant | " + " | ".join(f"{s.value} w/o" for s in REPORTED_SPLITS) + " | " + " | ".join(f"{s.value} with" for s in REPORTED_SPLITS) + " |",
              "|---|" + "---|" * (2 * len(REPORTED_SPLITS))]
    for name, v in r["paraphrase_accuracy"].items():
        cells = [_f(v["without_unlearning"][s.value]) for s in REPORTED_SPLITS] + [_f(v["with_unlearning"][s.value]) for s in REPORTED_SPLITS]
        lines.append(f"| {name} ({v['description']}) | " + " | ".join(cells) + " |")
    if r.get("attack_suite"):
        lines += ["", "## Attack suite (accuracy %, held-out pools; forget should stay low, retain high)", "", *suite_markdown(r["attack_suite"])]
    rl = r["relearning"]
    lines += ["", "## Relearning", "", f"Test-forget accuracy: base {_f(rl['base_forget_accuracy'])}, unlearned {_f(rl['unlearned_forget_accuracy'])}.", ""]
    if rl.get("skipped"):
        lines.append("Relearning attack skipped (audit.relearn=false).")
    elif "fine_tuning" in rl:
        ft = rl["fine_tuning"]
        steps = ft["steps_to_target"] if ft["steps_to_target"] is not None else f"not within {ft['max_steps']}"
        lines.append(f"Fine-tuning the unlearned weights on {ft['samples']} forget rows (lr {ft['learning_rate']}): "
                     f"steps to reach {ft['target_accuracy']:.3f}: **{steps}**; accuracy per step {ft['accuracy_curve']}.")
    else:
        lines.append(f"Weights unchanged: without the prompt the model answers the forget set with accuracy "
                     f"{_f(rl['without_prompt']['forget_accuracy'])} — **0 steps** to relearn.")
    lines += ["", "## Limits", "", r["limits"], ""]
    return "\n".join(lines)
