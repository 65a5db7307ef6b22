#!/usr/bin/env bash
# The SST-2 CPU comparison scored twice: on the published test rows and on leak-free test rows
# (`spul prepare --dedupe-test`), with the same familiarised base and the same SPUL artifact (the training rows
# are identical in both: the limits sample each split on its own). docs/data.md, "Effect on the CPU comparison".
#
#   scripts/sst2_dedupe_effect.sh EXPERIMENT_OUTPUT [OUT]
#
# EXPERIMENT_OUTPUT: a finished `spul experiment --config experiments/new_methods_sst2_cpu -o DIR` (or
# main_sst2_cpu) folder: its shared/familiarized/model and work/spul/artifact are evaluated.
# SST2 (default ../shared/data/sst2_unlearning): the published splits.
set -euo pipefail
RUN=${1:?usage: scripts/sst2_dedupe_effect.sh EXPERIMENT_OUTPUT [OUT]}
OUT=${2:-runs/sst2_dedupe_effect}
SRC=${SST2:-../shared/data/sst2_unlearning}
BASE="$RUN/shared/familiarized/model"
ART="$RUN/work/spul/artifact"
[ -d "$BASE" ] && [ -d "$ART" ] || { echo "no familiarised base or SPUL artifact under $RUN" >&2; exit 2; }
[ -f "$OUT/dedup/manifest.json" ] || spul prepare --recipe sst2_paper --source "$SRC" --dedupe-test -o "$OUT/dedup"
# the experiment's model and subsample (experiments/main_sst2_cpu.yaml); the quickstart has the same template
COMMON=(model.dtype=bfloat16 model.attn_implementation=null
        "data.limits={train_forget: 64, train_retain: 192, test_forget: 40, test_retain: 120}"
        evaluation.include_vanilla=false evaluation.progress=false)
for variant in published dedup; do
  source_dir=$([ "$variant" = published ] && echo "$SRC" || echo "$OUT/dedup")
  spul evaluate -c quickstart -o "$OUT/eval_$variant" "${COMMON[@]}" "data.source=$source_dir" --base "$BASE" --artifact "$ART"
done
