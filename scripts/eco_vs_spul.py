"""ECO, SPUL and SPUL-on-flagged-prompts side by side with the packaged SmolLM2 (bf16, CPU, small subsamples).

    SPUL_CACHE=/tmp/spulcache nice -n 10 python scripts/eco_vs_spul.py \
        --reviews-base runs/main_generated_cpu/shared/familiarized/model --reviews-spul runs/main_generated_cpu/work/spul/artifact \
        --sst2-base runs/main_sst2_cpu/shared/familiarized/model --sst2-spul runs/main_sst2_cpu/work/spul/artifact

generated:reviews: reuses a familiarised model and SPUL artifact when given (e.g. from
`spul experiment --config experiments/main_generated_cpu`: same template and subsample),
else familiarises (1 epoch) and trains SPUL (2 epochs) itself. SST-2 (../shared/data/sst2_unlearning,
same subsample 64/192/40/120 as the reviews): no familiarisation (the base is SmolLM2-Instruct zero-shot) and SPUL for 1 epoch,
to stay within a few CPU minutes, unless --sst2-base / --sst2-spul reuse a familiarised model and a SPUL
prompt (e.g. from `spul experiment --config experiments/main_sst2_cpu`, same template and subsample). ECO everywhere: MiniLM + logistic-regression classifier, conformal α=0.1 on
the retain side, σ search (2 steps, lr 8) on 32 train-forget rows;
only the two test splits are evaluated (CPU time). Tables: runs/eco_vs_spul/<name>/eco/report/ and
runs/eco_vs_spul/summary.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spul.configuration import load_config, to_dict
from spul.evaluation.report import markdown_table, write_report
from spul.interfaces.cli import resolve_config_path
from spul.methods.eco.runner import eco_dir, evaluate_eco, train_eco
from spul.pipeline import RunConfig, finetune, prepare, unlearn

ROOT = Path("runs/eco_vs_spul")
SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2_unlearning"
LIMITS = ["data.limits.train_forget=64", "data.limits.train_retain=192", "data.limits.test_forget=40", "data.limits.test_retain=120"]
COMMON = ["model.dtype=bfloat16", "eco.classifier.alpha=0.1", "eco.search.steps=2", "eco.search.learning_rate=8", "eco.search.max_rows=32",
          "eco.corruption.sigma=0.05", "evaluation.progress=false",
          "evaluation.splits=[test_forget,test_retain]", *LIMITS]
SETS = {
    "reviews": ["data.source=generated:reviews", "finetune.num_epochs=1", "unlearn.num_epochs=2"],
    "sst2": [f"data.source={SST2}", "model.max_length=96", "finetune.enabled=false", "unlearn.num_epochs=1"],
}


def run_one(name: str, base: str | None, spul_artifact: str | None) -> str:
    started = time.time()
    overrides = [o for o in SETS[name] if not (base and o.startswith("finetune.enabled"))]  # a given base is familiarised
    cfg = load_config(RunConfig, resolve_config_path("quickstart"), [f"output_dir={ROOT / name}", *COMMON, *overrides])
    data = prepare(cfg)
    base = base or finetune(cfg, data)
    t = time.time()
    spul_artifact = spul_artifact or unlearn(cfg, data, base)
    spul_s = time.time() - t
    t = time.time()
    eco_artifact = train_eco(cfg, data, base)
    eco_s = time.time() - t
    results = evaluate_eco(cfg, data, eco_artifact, base, spul_artifact)
    write_report(results, eco_dir(cfg) / "report", {"sizes": data.sizes(), "config": to_dict(cfg), "base": base, "spul_artifact": str(spul_artifact)})
    eco = next(r for r in results if r.name.startswith("ECO"))
    table = markdown_table(results, with_f1=False)
    info = (f"base: {base}; SPUL artifact: {spul_artifact}\n\nECO flags (FNR on forget splits, FPR on retain splits): {eco.info['flags']}; "
            f"calibration: {eco.info['classifier']['calibration']}; σ = {eco.info['corruption']['sigma']:.4g}\n\n"
            f"SPUL training {spul_s:.0f} s (0 = reused), ECO classifier + σ search {eco_s:.0f} s, total {time.time() - started:.0f} s wall")
    return f"## {name} ({data.source}, sizes {data.sizes()})\n\n{table}\n\n{info}\n"


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("spul.methods.eco").setLevel(logging.INFO)
    p = argparse.ArgumentParser()
    p.add_argument("sets", nargs="*", default=list(SETS))
    p.add_argument("--reviews-base")
    p.add_argument("--reviews-spul")
    p.add_argument("--sst2-base")
    p.add_argument("--sst2-spul")
    args = p.parse_args()
    sections = []
    for name in args.sets:
        reuse = (getattr(args, f"{name}_base"), getattr(args, f"{name}_spul"))
        sections.append(run_one(name, *reuse))
        print(sections[-1], flush=True)
        ROOT.mkdir(parents=True, exist_ok=True)
        (ROOT / "summary.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
