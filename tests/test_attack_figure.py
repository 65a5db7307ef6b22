"""The attack-suite trade-off figure and the audit_suite summary gathered from per-cell audit files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _suite(forget: float, retain: float) -> dict:
    return {fam: {"with_unlearning": {"test_forget": forget + d, "test_retain": retain - d},
                  "without_unlearning": {"test_forget": 0.9, "test_retain": 0.88 - d}}
            for fam, d in (("none", 0.0), ("injection", 0.05), ("combined", 0.2))}


def test_attack_tradeoff_plot_writes_a_png(tmp_path):
    from spul.evaluation.figures import attack_tradeoff_plot

    out = attack_tradeoff_plot({"SPUL": _suite(0.3, 0.8), "ECO": _suite(0.5, 0.86)}, tmp_path / "t.png", title="tiny")
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"


def test_audit_suite_summary_gathers_cells_written_by_other_processes(tmp_path):
    """Two audit processes each wrote their own cells; --summary-only merges them and marks the per-family checks."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import audit_suite
    finally:
        sys.path.pop(0)
    for cell, (f, r) in {"spul": (0.3, 0.8), "eco": (0.5, 0.86)}.items():
        folder = tmp_path / "audit_suite" / cell
        folder.mkdir(parents=True)
        (folder / "audit.json").write_text(json.dumps({"attack_suite": _suite(f, r)}))
    audit_suite.summarise(tmp_path, "tiny", {"spul": "SPUL", "eco": "ECO", "absent": "never audited"})
    md = (tmp_path / "audit_suite" / "summary.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    # injection, forget +5 points over no attack for both; retain under it: ECO 81 vs base 83 (within 5) passes,
    # SPUL 75 vs base 83 (8 points below) does not
    assert "| 55.0 ✓ | 81.0 |" in rows["injection"] and "| 35.0 | 75.0 |" in rows["injection"]
    # combined: forget +20 points over no attack -> not within the bound
    assert "✓" not in rows["combined"]
    assert set(json.loads((tmp_path / "audit_suite" / "summary.json").read_text())) == {"spul", "eco"}
    assert (tmp_path / "audit_suite" / "tradeoff.png").is_file()


def test_audit_suite_summary_only_without_audits_is_one_line_error(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import audit_suite
    finally:
        sys.path.pop(0)
    import pytest

    with pytest.raises(SystemExit, match="no audited cell"):
        audit_suite.summarise(tmp_path, "tiny", {"spul": "SPUL"})
