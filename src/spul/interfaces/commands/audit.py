"""``spul audit --config FILE [--artifact DIR] [key=value]``: attack an artifact, write audit.json + audit.md.

Audit settings are ``audit.KEY=VALUE`` overrides (or an ``audit:`` section in the YAML file); everything
else configures the run as for ``spul evaluate``.
"""

from __future__ import annotations

from pathlib import Path


def cmd_audit(args) -> int:
    from spul.configuration import deep_merge, from_dict, load_yaml, parse_overrides
    from spul.evaluation.attacks import AuditConfig, run_audit
    from spul.interfaces.options import overrides_of, resolve_config_path
    from spul.pipeline import RunConfig

    path = resolve_config_path(args.config)
    data = load_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides_of(args)))
    from spul.run_config_generation import is_generation_config

    if is_generation_config(data):
        return _audit_generation(args, data)
    audit_cfg = from_dict(AuditConfig, data.pop("audit", None) or {}, prefix="audit")
    cfg = from_dict(RunConfig, data)
    artifact = Path(args.artifact) if args.artifact else cfg.out / "artifact"
    report = run_audit(cfg, artifact, audit_cfg)
    mia = report["membership_auc"]
    print("membership AUC (without → with unlearning): " + ", ".join(f"{k} {v['without_unlearning']:.2f}→{v['with_unlearning']:.2f}" for k, v in mia.items()))
    print(f"report: {Path(report['report_dir']) / 'audit.md'}")
    return 0


def _audit_generation(args, data) -> int:
    """A generative (qa) run: ROUGE-L per query family and membership inference (``generation_audit``)."""
    from spul.configuration import from_dict
    from spul.evaluation.attacks.generation_audit import GenerationAuditConfig, run_generation_audit
    from spul.run_config_generation import GenerationRunConfig

    audit_cfg = from_dict(GenerationAuditConfig, data.pop("audit", None) or {}, prefix="audit")
    cfg = from_dict(GenerationRunConfig, data)
    artifact = Path(args.artifact) if args.artifact else cfg.out / "artifact"
    report = run_generation_audit(cfg, artifact, audit_cfg)
    for family, e in report["rouge_l"].items():
        print(f"{family}: ROUGE-L forget {e['forget']['without_unlearning']:.2f}→{e['forget']['with_unlearning']:.2f}, "
              f"retain {e['retain']['without_unlearning']:.2f}→{e['retain']['with_unlearning']:.2f}")
    mia = report.get("membership_auc")
    if mia:
        print("membership AUC (without → with unlearning): " + ", ".join(
            f"{s} {mia['without_unlearning'][s]:.2f}→{mia['with_unlearning'][s]:.2f}" for s in mia["without_unlearning"]))
    print(f"report: {Path(report['report_dir']) / 'audit.md'}")
    return 0


def register(subparsers) -> None:
    from spul.evaluation.attacks import AuditConfig
    from spul.interfaces.options import add_config_arguments, add_dataclass_arguments

    help_text = "attack an artifact: membership inference, re-phrased queries, relearning"
    p = subparsers.add_parser("audit", help=help_text, description=help_text)
    add_config_arguments(p)
    add_dataclass_arguments(p, AuditConfig, "audit")
    p.add_argument("--artifact", help="artifact folder (default: OUTPUT_DIR/artifact)")
    p.set_defaults(func=cmd_audit)
