"""``spul eco``: train ECO (prompt classifier + corruption σ) against the base model and compare it with SPUL.

    spul eco --config quickstart                       # classifier, σ search, artifact, evaluation table
    spul eco --config quickstart --spul-artifact runs/quickstart/artifact   # + SPUL and SPUL-on-flagged rows
    spul eco --config quickstart --artifact runs/quickstart/eco/artifact    # evaluate an existing ECO artifact
"""

from __future__ import annotations

from pathlib import Path


def cmd_eco(args) -> int:
    from spul.evaluation.report import markdown_table, write_report
    from spul.configuration import to_dict
    from spul.interfaces.options import load_run_config as _load
    from spul.pipeline import eco_dir, evaluate_eco, finetune, prepare, train_eco

    cfg = _load(args)
    data = prepare(cfg)
    base = finetune(cfg, data)
    artifact = Path(args.artifact) if args.artifact else train_eco(cfg, data, base)
    spul_artifact = args.spul_artifact or (cfg.out / "artifact" if (cfg.out / "artifact").is_dir() else None)
    results = evaluate_eco(cfg, data, artifact, base, spul_artifact)
    write_report(results, eco_dir(cfg) / "report", {"sizes": data.sizes(), "config": to_dict(cfg), "eco_artifact": str(artifact)})
    print(markdown_table(results, with_f1=False))
    eco = next(r for r in results if r.name.startswith("ECO"))
    print(f"\nclassifier flags: {eco.info['flags']}")
    print(f"artifact: {artifact}\nreport: {eco_dir(cfg) / 'report' / 'results.md'}")
    return 0


def register(subparsers) -> None:
    from spul.interfaces.options import add_config_arguments

    help_text = "ECO: flag forget prompts with a classifier and corrupt their embeddings (σ tuned), compared with SPUL"
    p = subparsers.add_parser("eco", help=help_text, description=help_text)
    add_config_arguments(p)
    p.add_argument("--artifact", help="evaluate this ECO artifact instead of training one")
    p.add_argument("--spul-artifact", help="SPUL artifact for the SPUL and combined rows (default: OUTPUT_DIR/artifact when present)")
    p.set_defaults(func=cmd_eco)
