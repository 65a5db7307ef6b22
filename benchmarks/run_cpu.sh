#!/usr/bin/env bash
# CPU benchmarks behind the numbers in benchmarks/results/*cpu*.json (a few minutes on 2 idle cores).
# The quickstart's SPUL settings: SmolLM2-135M, fp32, batch 16, prompt 10, max_length 128, generated reviews.
set -euo pipefail
export SPUL_CACHE=${SPUL_CACHE:-/tmp/spulcache}
day=$(date -u +%F)
nice -n 10 spul bench --model packaged:smollm2-135m-instruct --dtype float32 --batch-size 16 --prompt-length 10 \
  --max-length 128 --steps 3 --warmup 1 --train optimised,naive --infer base,prompt,prefix_cache \
  --infer-batch-size 32 --infer-reps 3 --out "benchmarks/results/${day}_cpu_smollm2-135m_fp32.json"
