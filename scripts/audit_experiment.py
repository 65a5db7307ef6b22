"""Audit the SPUL cell and the selected cell of one baseline of a finished experiment (`spul experiment`).

    SPUL_CACHE=/tmp/spulcache python scripts/audit_experiment.py runs/main_generated_cpu [--baseline GA+GD] [--limit 40]

The audit subjects are the experiment's own artifacts (same familiarised base, template and subsample), so the
audit report and the experiment table describe the same models. Reports land in
<experiment>/audit/<cell id>/audit.{json,md}; a summary of both in <experiment>/audit/summary.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from spul.errors import SpulError
    from spul.evaluation.attacks import AuditConfig, run_audit
    from spul.experiments.runner import load_finished
    from spul.io import write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment_dir")
    p.add_argument("--baseline", default="GA+GD", help="method name of the baseline whose selected cell is audited")
    p.add_argument("--limit", type=int, default=40, help="rows per split")
    args = p.parse_args()
    root = Path(args.experiment_dir)
    try:
        results, exp = load_finished(root)
    except SpulError as err:
        raise SystemExit(f"error: {err}") from None
    run_cfg = exp.run_config(str(root / "shared"))
    spul_cell = next(c for c in results["cells"] if c["kind"] == "spul")
    base_cells = [c for c in results["cells"] if c["method"] == args.baseline and c.get("selected")]
    if not base_cells:
        raise SystemExit(f"error: no selected cell of method {args.baseline!r} in {root / 'results.json'}; name one of the experiment's baselines")
    acfg = AuditConfig(limit=args.limit, batch_size=16, relearn_samples=8, relearn_max_steps=8, relearn_learning_rate=5e-4)
    summary = [f"# Audit of {exp.name}\n"]
    for cell in (spul_cell, base_cells[0]):
        try:
            report = run_audit(run_cfg, cell["info"]["artifact"], acfg, out_dir=root / "audit" / cell["id"])
        except SpulError as e:
            raise SystemExit(f"error: {e}") from None
        md = (Path(report["report_dir"]) / "audit.md").read_text()
        summary.append(f"## {cell['name']} ({cell['id']}, {report['seconds']} s)\n\n{md}\n")
        print(summary[-1], flush=True)
    write_text(root / "audit" / "summary.md", "\n".join(summary))


if __name__ == "__main__":
    main()
