#!/usr/bin/env bash
# Every GPU target of the project (issue 6 / issue 19), JSON out. NOT RUN in this repository yet: no GPU has been
# lent to the sessions that wrote it. Random weights of the real shapes (random:llama-7b), nothing downloaded.
#
#   1. SPUL training on a 7B Llama in bf16, batch 32, 60 text + 30 prompt tokens: useful MFU >= 50 % (optimised)
#      against the naive step (full-vocabulary logits + separate unprompted forward; reference 122 ex/s, 29 % MFU
#      on an H100). `spul bench` reports MFU, ex/s, peak memory per variant and a `targets` block.
#   2. Serving overhead of the soft prompt at batch 32 (prefix cache vs base) <= 3 %: the same run's --infer part.
#   3. 2-GPU DDP and FSDP (accelerate launch with the shipped configs) agreeing with one GPU, DeepSpeed ZeRO-2/3
#      launches, and SPUL/ECO over a 4-bit/8-bit base: the GPU tests of tests/test_scale.py (they skip what the
#      machine lacks: a second GPU, deepspeed, bitsandbytes), results as JSON (pytest-json-free: junit XML + summary).
#
# Usage: bash benchmarks/run_gpu.sh [OUT_DIR]   (default benchmarks/results); SPUL_BENCH_QUICK=1 for a 2-minute smoke run.
set -euo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
py=${PYTHON:-python}
day=$(date -u +%F)
gpu=$($py -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
ngpu=$($py -c "import torch; print(torch.cuda.device_count())")
steps=10; reps=7
if [ "${SPUL_BENCH_QUICK:-0}" = 1 ]; then steps=3; reps=2; fi
spul() { $py -m spul.interfaces.cli "$@"; }

# 1 + 2: 7B, batch 32, fixed 60 text tokens, 30 prompt tokens, SDPA
spul bench --model random:llama-7b --dtype bfloat16 --data synthetic --seq-len 60 --min-seq-len 60 --batch-size 32 \
  --prompt-length 30 --steps $steps --warmup 2 --train optimised,naive --infer base,prompt,prefix_cache --infer-batch-size 32 \
  --infer-reps $reps --attn sdpa --clock wall --out "$out/${day}_${gpu}_llama-7b_bf16_b32.json"
# the same with gradient checkpointing (memory vs speed) and a 1B model for scale
spul bench --model random:llama-7b --dtype bfloat16 --data synthetic --seq-len 60 --min-seq-len 60 --batch-size 32 \
  --prompt-length 30 --steps $steps --warmup 2 --train optimised_ckpt --infer "" --attn sdpa --clock wall \
  --out "$out/${day}_${gpu}_llama-7b_bf16_b32_ckpt.json"
spul bench --model random:llama-1b --dtype bfloat16 --data synthetic --seq-len 60 --min-seq-len 60 --batch-size 32 \
  --prompt-length 30 --steps $steps --warmup 2 --attn sdpa --clock wall --infer-reps $reps \
  --out "$out/${day}_${gpu}_llama-1b_bf16_b32.json"

# 3: engines and quantised bases (tiny random model; each test compares with one process or checks the artifact)
$py -m pytest -q -p no:cacheprovider -rs tests/test_scale.py --junitxml "$out/${day}_${gpu}_engines.xml" || true
$py - "$out/${day}_${gpu}_engines.xml" "$out/${day}_${gpu}_engines.json" "$ngpu" <<'PY'
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = []
for case in root.iter("testcase"):
    status = "passed"
    for kind in ("failure", "error", "skipped"):
        node = case.find(kind)
        if node is not None:
            status, reason = kind, (node.get("message") or "")[:300]
            break
    cases.append({"test": case.get("name"), "status": status, "seconds": float(case.get("time", 0)),
                  **({"reason": reason} if status != "passed" else {})})
json.dump({"gpus": int(sys.argv[3]), "tests": cases}, open(sys.argv[2], "w"), indent=1)
print(json.dumps({c["test"]: c["status"] for c in cases}, indent=1))
PY
echo "results in $out"
