#!/usr/bin/env bash
# GPU benchmarks (not run in this repository yet: no GPU was available). Random weights of the real shapes,
# so nothing is downloaded. Target: random:llama-7b in bf16 on one H100 reaches >= 50% MFU (optimised variant).
set -euo pipefail
day=$(date -u +%F)
gpu=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
spul bench --model random:llama-7b --dtype bfloat16 --data synthetic --seq-len 512 --batch-size 16 --prompt-length 30 \
  --steps 10 --warmup 2 --train optimised,optimised_ckpt,naive --infer base,prompt,prefix_cache --infer-batch-size 32 \
  --attn sdpa --out "benchmarks/results/${day}_${gpu}_llama-7b_bf16.json"
spul bench --model random:llama-1b --dtype bfloat16 --data synthetic --seq-len 512 --batch-size 32 --prompt-length 30 \
  --steps 10 --warmup 2 --attn sdpa --out "benchmarks/results/${day}_${gpu}_llama-1b_bf16.json"
