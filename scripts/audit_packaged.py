"""Audit SPUL and a GA+GD baseline on SmolLM2-135M (bfloat16, CPU), on generated reviews and on SST-2.

Small on purpose (subsampled splits, short training) so that both data sets need about 5 CPU-minutes
on 2 cores:  nice -n 10 .venv/bin/python scripts/audit_packaged.py [generated|sst2 ...]
Reports: runs/audit_<data>/audit/{artifact,baseline}/audit.md
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("SPUL_CACHE", "/tmp/spulcache")
REPO = Path(__file__).resolve().parents[1]
SOURCES = {"generated": "generated:reviews", "sst2": str(REPO.parent / "shared" / "data" / "sst2_unlearning")}


def main(names: list[str]) -> None:
    import torch

    from spul.configuration import from_dict
    from spul.data.tasks import Task
    from spul.evaluation.attacks import AuditConfig, run_audit
    from spul.methods.baselines import BaselineConfig, train_baseline
    from spul.pipeline import RunConfig, finetune, prepare, unlearn

    torch.set_num_threads(2)
    for name in names:
        started = time.time()
        cfg = from_dict(RunConfig, {
            "output_dir": str(REPO / "runs" / f"audit_{name}"),
            "model": {"name_or_path": "packaged:smollm2-135m-instruct", "dtype": "bfloat16", "device": "cpu", "max_length": 96},
            "data": {"source": SOURCES[name], "limits": {"train_forget": 32, "train_retain": 64, "test_forget": 32, "test_retain": 32}},
            "finetune": {"num_epochs": 2, "batch_size": 16, "learning_rate": 5e-4, "warmup_ratio": 0.05, "max_grad_norm": 1.0,
                         "save_steps": 1000, "progress_bar": False},
            "unlearn": {"prompt_encoder": "prompt_tuning", "prompt_length": 10, "learning_rate": 3e-2, "num_epochs": 4, "batch_size": 16,
                        "warmup_ratio": 0.05, "max_grad_norm": 1.0, "save_steps": 1000, "progress_bar": False},
        })
        data = prepare(cfg)
        base = finetune(cfg, data)
        spul_artifact = unlearn(cfg, data, base)
        bcfg = BaselineConfig(method="ga_gd", learning_rate=5e-4, num_epochs=1, batch_size=16, progress_bar=False, save_steps=1000)
        baseline_artifact = train_baseline(cfg.model, Task(cfg.task), data, bcfg, cfg.out / "baseline", base=base)
        acfg = AuditConfig(limit=32, batch_size=16, relearn_samples=8, relearn_max_steps=8, relearn_learning_rate=5e-4)
        for artifact, label in ((spul_artifact, "artifact"), (baseline_artifact, "baseline")):
            report = run_audit(cfg, artifact, acfg, data=data, out_dir=cfg.out / "audit" / label)
            print(f"\n===== {name} / {report['method']} ({report['seconds']} s) =====")
            print((Path(report["report_dir"]) / "audit.md").read_text())
        print(f"[{name}] total {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["generated", "sst2"])
