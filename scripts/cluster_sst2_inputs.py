"""Inputs for experiments/cluster_sst2_cpu: SST-2 review rows of at least 6 words, seeded, as two CSV files.

    python scripts/cluster_sst2_inputs.py ../shared/data/sst2_unlearning OUT_DIR [--train 12000] [--test 3000] [--seed 0]

Writes OUT_DIR/train.csv (from v3_train_retain.csv) and OUT_DIR/test.csv (from v3_test_retain.csv), columns
text,label,label_text; `spul prepare --input OUT_DIR/train.csv --test-input OUT_DIR/test.csv --clusters 20 ...` then
builds a cluster-defined forget set from them. Short phrase fragments (SST-2's sub-sentence rows) are left out
because a fragment of two words carries no topic to cluster on.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sst2_dir")
    p.add_argument("out_dir")
    p.add_argument("--train", type=int, default=12000)
    p.add_argument("--test", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-words", type=int, default=6)
    args = p.parse_args()
    src, out = Path(args.sst2_dir), Path(args.out_dir)
    files = {"train.csv": ("v3_train_retain.csv", args.train), "test.csv": ("v3_test_retain.csv", args.test)}
    missing = [name for name, _ in files.values() if not (src / name).is_file()]
    if missing:
        raise SystemExit(f"error: {src / missing[0]} not found; give the folder of the SST-2 unlearning splits (v3_*.csv)")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for target, (name, count) in files.items():
        with open(src / name, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        rng.shuffle(rows)
        rows = [r for r in rows if len(r["text"].split()) >= args.min_words][:count]
        with open(out / target, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label", "label_text"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        print(f"{out / target}: {len(rows)} rows")


if __name__ == "__main__":
    main()
