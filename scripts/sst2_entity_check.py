"""Compare spul's whole-word entity split of SST-2 with the SPUL authors' published forget set.

Usage: python scripts/sst2_entity_check.py /path/to/sst2_unlearning [--json out.json]

Pools the four published CSVs (v3_train_forget, v3_train_retain, v3_test_forget, v3_test_retain), runs
``split_by_entities`` with ``SST2_NAMES`` and reports how many rows it forgets versus the paper's 2,035,
the row-level overlap with the paper's forget set, and what the same names catch when matched as
lowercase substrings (the paper's apparent rule).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from spul.data.builders import entity_counts, match_entities, split_by_entities
from spul.data.recipes import SST2_NAMES
from spul.data.sources import find_split_files, read_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    files = find_split_files(args.folder)
    frames, paper_forget = [], []
    for split, path in sorted(files.items(), key=lambda kv: kv[0].value):
        df = read_table(path)
        frames.append(df[["text", "label"]])
        paper_forget.append(np.full(len(df), split.is_forget))
    pool = pd.concat(frames, ignore_index=True)
    paper = np.concatenate(paper_forget)
    texts = pool["text"].astype(str)

    ours = match_entities(texts, SST2_NAMES)
    lowered = texts.str.lower()
    substring = np.array([any(n in t for n in SST2_NAMES) for t in lowered])
    data = split_by_entities(pool, SST2_NAMES, seed=args.seed, label_words=["negative", "positive"], source=str(args.folder))

    only_paper = np.flatnonzero(paper & ~ours)
    # why the paper has rows we do not: the name occurs only inside a longer word
    inside_word = sum(bool(re.search("|".join(re.escape(n) for n in SST2_NAMES), t)) for t in lowered.iloc[only_paper])
    result = {
        "pooled_rows": int(len(pool)),
        "paper_forget_rows": int(paper.sum()),
        "spul_forget_rows": int(ours.sum()),
        "spul_split_sizes": data.sizes(),
        "overlap_rows": int((paper & ours).sum()),
        "only_paper_rows": int(len(only_paper)),
        "only_paper_rows_with_a_name_inside_a_longer_word": int(inside_word),
        "only_spul_rows": int((ours & ~paper).sum()),
        "overlap_fraction_of_paper": round(float((paper & ours).sum() / max(paper.sum(), 1)), 4),
        "precision_vs_paper": round(float((paper & ours).sum() / max(ours.sum(), 1)), 4),
        "same_names_as_substrings_rows": int(substring.sum()),
        "same_names_as_substrings_overlap": int((paper & substring).sum()),
        "name_counts": entity_counts(texts, SST2_NAMES),
        "examples_only_paper": lowered.iloc[only_paper[:8]].str.slice(0, 90).tolist(),
        "examples_only_spul": lowered[ours & ~paper].head(8).str.slice(0, 90).tolist(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
