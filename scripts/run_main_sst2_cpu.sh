#!/usr/bin/env bash
# Reproduces the SST-2 CPU main comparison reported in docs/experiments.md (about 15 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export SPUL_CACHE="${SPUL_CACHE:-/tmp/spulcache}"
nice -n 10 .venv/bin/spul experiment --config src/spul/configs/experiments/main_sst2_cpu.yaml "$@"
