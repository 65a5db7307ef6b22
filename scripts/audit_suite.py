"""Attack-suite audit (held-out pools) of every SPUL / gated SPUL / ECO cell of a finished experiment, in one table.

    SPUL_CACHE=/tmp/spulcache python scripts/audit_suite.py runs/robust_sst2_cpu [--limit 120] [--families injection,entity]

Per cell: <experiment>/audit_suite/<cell id>/audit.{json,md} (membership inference and relearning skipped);
the summary table of every cell audited so far (also from other processes): <experiment>/audit_suite/summary.md,
summary.json and tradeoff.png (a point per method and attack family). Accuracies in %, test splits only.
    python scripts/audit_suite.py runs/robust_sst2_cpu --summary-only      # rebuild the summary only
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

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment_dir")
    p.add_argument("--limit", type=int, default=120, help="rows per split (the test splits are subsampled to at most this)")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--summary-only", action="store_true", help="only rebuild summary.md/json and tradeoff.png from the cells audited so far")
    p.add_argument("--cells", default="", help="comma-separated cell ids to audit (default: every cell of --kinds)")
    p.add_argument("--kinds", default="spul,eco,spul_gated", help="cell kinds to audit")
    args = p.parse_args()
    root = Path(args.experiment_dir)
    try:
        results, exp = load_finished(root)
    except SpulError as err:
        raise SystemExit(f"error: {err}") from None
    if args.summary_only:
        summarise(root, exp.name, {c["id"]: c["name"] for c in results["cells"]})
        return
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
    summarise(root, exp.name, {c["id"]: c["name"] for c in results["cells"]})


def summarise(root: Path, name: str, names: dict[str, str]) -> None:
    """summary.md / summary.json / tradeoff.png from every cell audited so far (several audit processes may have
    written their cells' ``audit.json``); per family the issue's checks: forget at most 10 points above the cell's
    no-attack forget accuracy, retain within 5 points of the base under the same attack."""
    from spul.evaluation.figures import attack_tradeoff_plot
    from spul.io import read_json, write_json, write_text

    reports = {}
    for cell_id, display in names.items():
        path = root / "audit_suite" / cell_id / "audit.json"
        if path.is_file():
            reports[cell_id] = {"name": display, "suite": read_json(path)["attack_suite"]}
    if not reports:
        raise SystemExit(f"error: no audited cell under {root / 'audit_suite'}; run this script without --summary-only first")
    ids = list(reports)
    first = reports[ids[0]]["suite"]
    families = list(first)
    head = "| family | base forget | base retain | " + " | ".join(f"{reports[i]['name']} forget | retain" for i in ids) + " |"
    lines = [f"# Attack suite on {name} (held-out pools; test splits; accuracy %)", "",
             "✓ = within the issue's bounds for that family: forget at most 10 points above the method's no-attack forget "
             "accuracy, retain within 5 points of the base model under the same attack.", "", head, "|---" * (3 + 2 * len(ids)) + "|"]
    for fam in families:
        base = first[fam]["without_unlearning"]
        row = [fam, f"{100 * base['test_forget']:.1f}", f"{100 * base['test_retain']:.1f}"]
        for i in ids:
            w = reports[i]["suite"][fam]["with_unlearning"]
            ref = reports[i]["suite"]["none"]["with_unlearning"]["test_forget"] if "none" in reports[i]["suite"] else w["test_forget"]
            base_here = reports[i]["suite"][fam]["without_unlearning"]["test_retain"]
            ok = w["test_forget"] <= ref + 0.10 + 1e-9 and w["test_retain"] >= base_here - 0.05 - 1e-9
            row += [f"{100 * w['test_forget']:.1f}{' ✓' if ok and fam != 'none' else ''}", f"{100 * w['test_retain']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    write_text(root / "audit_suite" / "summary.md", "\n".join(lines) + "\n")
    write_json(root / "audit_suite" / "summary.json", reports)
    attack_tradeoff_plot({reports[i]["name"]: reports[i]["suite"] for i in ids}, root / "audit_suite" / "tradeoff.png",
                         title=f"{name}: attack families (held-out pools)")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
