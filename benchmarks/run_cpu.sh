#!/usr/bin/env bash
# CPU benchmarks behind the numbers in benchmarks/results/*cpu*.json (about 30 minutes on 2 idle cores).
# The quickstart's SPUL settings: SmolLM2-135M, fp32, batch 16, prompt 10, max_length 128, generated reviews.
set -euo pipefail
export SPUL_CACHE=${SPUL_CACHE:-/tmp/spulcache}
day=$(date -u +%F)
nice -n 10 spul bench --model packaged:smollm2-135m-instruct --dtype float32 --batch-size 16 --prompt-length 10 \
  --max-length 128 --steps 3 --warmup 1 --train optimised,naive --infer base,prompt,prefix_cache \
  --infer-batch-size 32 --infer-reps 7 --out "benchmarks/results/${day}_cpu_smollm2-135m_fp32.json"
# Serving overhead with interleaved repetitions (base / uncached prompt / prefix cache back to back), 15 rounds.
nice -n 10 python benchmarks/prefix_overhead.py --reps 15 --out "benchmarks/results/${day}_cpu_smollm2-135m_prefix_overhead.json"
# The whole SPUL phase of the quickstart (6 epochs, 180 steps), real trainer vs naive loop, process CPU time on
# one thread (about 10 minutes); optimised_plain = the trainer without shared prompt keys/values and reference cache.
nice -n 10 spul bench --phase quickstart --phase-variants optimised,optimised_plain,naive \
  --out "benchmarks/results/${day}_cpu_quickstart_spul_phase.json"
nice -n 10 spul bench --phase quickstart --phase-variants optimised,optimised_plain,naive --set model.attn_implementation=sdpa \
  --out "benchmarks/results/${day}_cpu_quickstart_spul_phase_sdpa.json"
