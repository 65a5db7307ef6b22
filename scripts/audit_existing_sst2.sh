#!/usr/bin/env bash
# Audit the SPUL and GA+GD artifacts of the SST-2 CPU experiment (runs/main_sst2_cpu, made by
# scripts/run_main_sst2_cpu.sh) with the packaged SmolLM2-135M in bfloat16: inference only, a few CPU-minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPUL_CACHE="${SPUL_CACHE:-/tmp/spulcache}"
COMMON=(model.name_or_path=packaged:smollm2-135m-instruct model.dtype=bfloat16 model.device=cpu model.max_length=64
        data.source=../shared/data/sst2_unlearning data.limits.train_forget=16 data.limits.train_retain=16
        data.limits.test_forget=16 data.limits.test_retain=32 finetune.enabled=false
        audit.limit=16 audit.batch_size=16 audit.relearn_samples=8 audit.relearn_max_steps=6 audit.relearn_learning_rate=5e-4)
for method in "${@:-spul ga_gd}"; do
  for m in $method; do
    nice -n 10 .venv/bin/spul audit -o "runs/audit_sst2_existing/$m" --artifact "runs/main_sst2_cpu/work/$m/artifact" "${COMMON[@]}"
  done
done
