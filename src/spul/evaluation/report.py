"""Results in the paper's layout: ACC and F1 on D_r^tr ↑, D_f^tr ↓, D_r^te ↑, D_f^te ↓ per method."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from spul.data.splits import SPLITS
from spul.evaluation.evaluate import ModelResult
from spul.io import write_json, write_text


def _arrow(split) -> str:
    return "↓" if split.is_forget else "↑"


def markdown_table(results: Sequence[ModelResult], with_f1: bool = True, with_generic: bool = True) -> str:
    """One row per model; percentages with two decimals, as in the paper's tables."""
    splits = [s for s in SPLITS if all(s.value in r.metrics for r in results)]
    head = ["Method"] + [f"ACC {s.symbol} {_arrow(s)}" for s in splits]
    if with_f1:
        head += [f"F1 {s.symbol} {_arrow(s)}" for s in splits]
    if with_generic:
        head += [f"generic {s.symbol}" for s in splits]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in results:
        cells = [r.name] + [f"{100 * r.metrics[s.value].accuracy:.2f}" for s in splits]
        if with_f1:
            cells += [f"{100 * r.metrics[s.value].f1_weighted:.2f}" for s in splits]
        if with_generic:
            cells += [f"{100 * r.metrics[s.value].generic_rate:.1f}" for s in splits]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def leakage_note(leakage: dict[str, Any] | None) -> str:
    """One paragraph under the table: how many test rows were already in a training split (data/manifest.json)."""
    rows = (leakage or {}).get("test_rows")
    if not rows:
        return ""
    parts = [f"{name} {r['leaking']}/{r['rows']} ({r['percent']}%)" for name, r in rows.items()]
    worst = max(r["percent"] for r in rows.values())
    warn = " The test columns partly measure memory of seen text, not generalisation." if worst > 0 else ""
    near = (leakage or {}).get("method", {}).get("near", "near-duplicate")
    return ("\n\nLeakage: test rows whose text is also in a training split (exact, whole-word contained, or"
            f" {near}): {', '.join(parts)}.{warn} Details per split pair: data/manifest.json → leakage.")


def write_report(results: Sequence[ModelResult], folder: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    folder = Path(folder)
    json_path = write_json(folder / "results.json", {"results": [r.as_dict() for r in results], **(extra or {})})
    sizes = (extra or {}).get("sizes")
    note = ""
    if sizes:
        note = "\n\nRows per split: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + "."
    note += leakage_note((extra or {}).get("leakage"))
    md = (
        "# Unlearning results\n\nAccuracy (ACC) and weighted F1 in %, against the original labels; a generic answer counts"
        " as wrong. ↑ higher is better (retain), ↓ lower is better (forget). 'generic' is the % of rows answered with a"
        f" generic label.\n\n{markdown_table(results)}{note}\n"
    )
    md_path = write_text(folder / "results.md", md)
    return json_path, md_path
