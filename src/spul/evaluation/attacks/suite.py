"""The attack suite in the audit: accuracy on the forget and retain splits under each family's held-out pool.

Every row of a split gets one attack drawn from the family's *held-out* pool (never used by robust training),
chosen by (seed, family, split, row); rows whose attack changes the template are scored with that template's
encoder. The ``none`` row is the unattacked query; each family is reported against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spul.data.attacks import FAMILIES, AttackSuite
from spul.data.encoding import TaskEncoder
from spul.data.tasks import Task, TaskConfig, TaskKind

SUITE_SPLITS = ("test_forget", "test_retain")


def _task_with_template(cfg: TaskConfig, template: str) -> TaskConfig:
    return TaskConfig(kind=cfg.kind, template=template, label_words=list(cfg.label_words), generic_labels=list(cfg.generic_labels),
                      question_column=cfg.question_column, choices_column=cfg.choices_column)


def attacked_rows(suite: AttackSuite, family: str, split: str, texts: list[str], template: str, pool: str = "heldout") -> list[tuple[str, str, str]]:
    """(attack id, text, template) per row; family ``none`` leaves the rows as they are."""
    if family == "none":
        return [("none", t, template) for t in texts]
    out = []
    for i, t in enumerate(texts):
        attack = suite.pick(family, pool, split, str(i))
        text, tmpl = suite.apply(attack, t, template)
        out.append((attack.id, text, tmpl))
    return out


def attacked_accuracy(model, task_cfg: TaskConfig, tokenizer, max_length: int, rows: list[tuple[str, str, str]], labels: np.ndarray,
                      batch_size: int, intervention=None) -> float:
    """Accuracy over rows that may each use another template (scored per template group, then pooled)."""
    from spul.evaluation.attacks.relearn import accuracy

    by_template: dict[str, list[int]] = {}
    for i, (_, _, tmpl) in enumerate(rows):
        by_template.setdefault(tmpl, []).append(i)
    correct = 0.0
    for tmpl, idx in by_template.items():
        enc = TaskEncoder(Task(_task_with_template(task_cfg, tmpl)), tokenizer, max_length)
        acc = accuracy(model, enc, [rows[i][1] for i in idx], labels[idx], batch_size, intervention)
        correct += acc * len(idx)
    return correct / max(1, len(rows))


def run_suite(subjects: list[tuple[str, Any, Any]], split_rows: dict[str, tuple[list[str], np.ndarray]], task_cfg: TaskConfig,
              tokenizer, max_length: int, families: list[str], entities: list[str], seed: int = 0, batch_size: int = 16,
              paraphraser: Any = None) -> dict[str, Any]:
    """``subjects``: (key, model, intervention). Returns {family: {"examples": [...], key: {split: accuracy}}} with a ``none`` row first.
    ``paraphraser`` (``spul.models.paraphrase.ModelParaphraser``) adds model rewrites to the paraphrase family."""
    suite = AttackSuite(seed=seed, entities=entities, label_words=task_cfg.label_words,
                        multiple_choice=task_cfg.kind is TaskKind.MULTIPLE_CHOICE, paraphraser=paraphraser)
    out: dict[str, Any] = {}
    for family in ["none", *families]:
        entry: dict[str, Any] = {"examples": []}
        for split, (texts, labels) in split_rows.items():
            rows = attacked_rows(suite, family, split, texts, task_cfg.template)
            if split == "test_forget":
                entry["examples"] = [{"attack": a, "text": t, "template": tm} for a, t, tm in rows[:2]]
            for key, model, intervention in subjects:
                entry.setdefault(key, {})[split] = attacked_accuracy(model, task_cfg, tokenizer, max_length, rows, labels, batch_size, intervention)
        out[family] = entry
    return out


def suite_markdown(suite: dict[str, Any], without: str = "without_unlearning", with_: str = "with_unlearning") -> list[str]:
    """Table: per family, forget / retain accuracy without and with unlearning, and the change against the ``none`` row."""
    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    none = suite["none"][with_]
    lines = ["| family (held-out pool) | test_forget w/o | test_forget with | Δ forget vs no attack | test_retain w/o | test_retain with | Δ retain vs no attack |",
             "|---|---|---|---|---|---|---|"]
    for family, v in suite.items():
        lines.append(f"| {family} | {pct(v[without]['test_forget'])} | {pct(v[with_]['test_forget'])} | "
                     f"{100 * (v[with_]['test_forget'] - none['test_forget']):+.1f} | {pct(v[without]['test_retain'])} | "
                     f"{pct(v[with_]['test_retain'])} | {100 * (v[with_]['test_retain'] - none['test_retain']):+.1f} |")
    return lines


__all__ = ["FAMILIES", "attacked_accuracy", "attacked_rows", "run_suite", "suite_markdown"]
