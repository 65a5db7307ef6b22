"""Experiment tables in Markdown: the paper's layout for the selected cells, the efficiency table, every
cell, and the α × β grid. Cells are the experiment runner's records (see ``spul.evaluation.figures``)."""

from __future__ import annotations

from typing import Any, Sequence

from spul.evaluation.evaluate import ModelResult
from spul.evaluation.report import markdown_table

Cell = dict[str, Any]


def cell_accuracy(cell: Cell, split: str) -> float:
    return 100 * float(cell["result"]["metrics"][split]["accuracy"])


def cell_result(cell: Cell, name: str | None = None) -> ModelResult:
    r = ModelResult.from_dict(cell["result"])
    r.name = name or cell.get("name", r.name)
    return r


def _fmt_int(n: Any) -> str:
    if n in (None, ""):
        return "–"
    n = int(n)
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}K" if n >= 1e3 else str(n))


def efficiency_table(cells: Sequence[Cell]) -> str:
    """Trainable parameters, seconds per epoch and peak memory per trained cell (same model and data)."""
    rows = [c for c in cells if c["kind"] != "reference"]
    lines = ["| Method | trainable params | s / epoch | train s | peak memory (MB) | memory measured as |", "|---|---:|---:|---:|---:|---|"]
    for c in rows:
        i = c["info"]
        lines.append(f"| {c['name']} | {_fmt_int(i.get('trainable_parameters'))} | {i.get('seconds_per_epoch', '–')} | {i.get('train_seconds', '–')} "
                     f"| {i.get('peak_memory_mb', '–')} | {i.get('memory_kind', '–')} |")
    return "\n".join(lines)


def grid_table(cells: Sequence[Cell], row_key: str, col_key: str) -> str:
    """A two-parameter grid (e.g. α × β, the paper's Table 3): each entry is ``ACC D_r^te / ACC D_f^te``."""
    grid = [c for c in cells if row_key in c["params"] and col_key in c["params"]]
    rows = sorted({c["params"][row_key] for c in grid})
    cols = sorted({c["params"][col_key] for c in grid})
    lines = [f"| {row_key} \\ {col_key} | " + " | ".join(str(v) for v in cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        entries = []
        for col in cols:
            match = [c for c in grid if c["params"][row_key] == r and c["params"][col_key] == col]
            entries.append(f"{cell_accuracy(match[0], 'test_retain'):.1f} / {cell_accuracy(match[0], 'test_forget'):.1f}" if match else "–")
        lines.append(f"| {r} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def experiment_markdown(name: str, cells: Sequence[Cell], rule: str, sizes: dict[str, int] | None = None) -> str:
    selected = [c for c in cells if c.get("selected")]
    parts = [
        f"# Experiment: {name}",
        "Accuracy (ACC) and weighted F1 in %, against the original labels; a generic answer counts as wrong. "
        "↑ higher is better (retain), ↓ lower is better (forget).",
        f"**Selection rule.** {rule}.",
        "## Main comparison (selected cell per method)",
        markdown_table([cell_result(c) for c in selected]),
        "## Efficiency (selected cells)",
        efficiency_table(selected),
        "## Every cell",
        markdown_table([cell_result(c) for c in cells], with_f1=False),
    ]
    if any("alpha" in c["params"] and "beta" in c["params"] for c in cells):
        parts += ["## α × β grid (ACC D_r^te / D_f^te)", grid_table(cells, "alpha", "beta")]
    if sizes:
        parts.append("Rows per split: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".")
    return "\n\n".join(parts) + "\n"
