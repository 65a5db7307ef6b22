"""Attack-suite audit (held-out pools) of every SPUL / gated SPUL / ECO cell of a finished experiment, in one table.

    SPUL_CACHE=/tmp/spulcache python scripts/audit_suite.py runs/robust_sst2_cpu [--limit 120] [--families injection,entity]

Per cell: <experiment>/audit_suite/<cell id>/audit.{json,md} (membership inference and relearning skipped);
the summary table of all cells: <experiment>/audit_suite/summary.md. Accuracies in %, test splits only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from spul.data.attacks import FAMILIES
    from spul.errors import SpulError
    from spul.evaluation.attacks import AuditConfig, run_audit
    from spul.experiments.runner import load_finished
    from spul.io import write_json, write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment_dir")
    p.add_argument("--limit", type=int, default=120, help="rows per split (the test splits are subsampled to at most this)")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--cells", default="", help="comma-separated cell ids to audit (default: every cell of --kinds)")
    p.add_argument("--kinds", default="spul,eco,spul_gated", help="cell kinds to audit")
    args = p.parse_args()
    root = Path(args.experiment_dir)
    try:
        results, exp = load_finished(root)
    except SpulError as err:
        raise SystemExit(f"error: {err}") from None
    run_cfg = exp.run_config(str(root / "shared"))
    kinds = set(args.kinds.split(","))
    cells = [c for c in results["cells"] if c["kind"] in kinds and c.get("info", {}).get("artifact")]
    if args.cells:
        wanted = args.cells.split(",")
        unknown = sorted(set(wanted) - {c["id"] for c in cells})
        if unknown:
            raise SystemExit(f"error: no audited cell {unknown[0]!r} in {root}; choose from: {', '.join(c['id'] for c in cells)}")
        cells = [c for c in cells if c["id"] in wanted]
    acfg = AuditConfig(limit=args.limit, batch_size=16, variants=["original"], membership=False, relearn=False,
                       families=args.families.split(","))
    reports = {}
    for cell in cells:
        started = time.time()
        try:
            report = run_audit(run_cfg, cell["info"]["artifact"], acfg, out_dir=root / "audit_suite" / cell["id"])
        except SpulError as e:
            raise SystemExit(f"error: {e}") from None
        reports[cell["id"]] = {"name": cell["name"], "suite": report["attack_suite"], "seconds": round(time.time() - started, 1)}
        print(cell["id"], reports[cell["id"]]["seconds"], "s", flush=True)
    families = ["none", *acfg.families]
    ids = list(reports)
    first = reports[ids[0]]["suite"] if ids else {}
    head = "| family | base forget | base retain | " + " | ".join(f"{i} forget | {i} retain" for i in ids) + " |"
    lines = [f"# Attack suite on {exp.name} (held-out pools; test splits; accuracy %)", "", head, "|---" * (3 + 2 * len(ids)) + "|"]
    for fam in families:
        base = first[fam]["without_unlearning"]
        row = [fam, f"{100 * base['test_forget']:.1f}", f"{100 * base['test_retain']:.1f}"]
        for i in ids:
            w = reports[i]["suite"][fam]["with_unlearning"]
            row += [f"{100 * w['test_forget']:.1f}", f"{100 * w['test_retain']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Audit seconds per cell: " + ", ".join(f"{i} {r['seconds']}" for i, r in reports.items())]
    write_text(root / "audit_suite" / "summary.md", "\n".join(lines) + "\n")
    write_json(root / "audit_suite" / "summary.json", reports)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
