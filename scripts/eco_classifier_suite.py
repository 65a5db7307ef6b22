"""ECO's prompt classifier under the attack suite: plain vs trained with the suite's training pools (issue 18).

    python scripts/eco_classifier_suite.py ../shared/data/sst2_unlearning [--train 400,1200] [--test 100,300] [--out DIR]

No language model runs: the classifier (MiniLM embeddings + logistic regression + conformal threshold, the
defaults of ``eco.classifier``) is trained twice on a seeded subsample of the training splits, once plain and
once with ``augment: {families: [injection, paraphrase, entity, combined], fraction: 1.0}``; then every test row
gets one attack from each family's *held-out* pool (as the audit does) and the table reports the share of
test-forget rows flagged (what ECO / gated SPUL act on) and of test-retain rows flagged (false positives).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from spul.configuration import to_dict
    from spul.data.attacks import FAMILIES, AttackSuite, default_entities
    from spul.data.sources import DataConfig, load_unlearning_data
    from spul.data.tasks import Task, TaskConfig
    from spul.evaluation.attacks.suite import attacked_rows
    from spul.io import write_json, write_text
    from spul.methods.eco import ClassifierConfig
    from spul.methods.eco.classifier import CachedEmbedder, train_classifier

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--train", default="400,1200", help="train_forget,train_retain rows (seeded subsample)")
    p.add_argument("--test", default="100,300", help="test_forget,test_retain rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--regularization", type=float, default=1.0, help="C of the logistic regression (both classifiers)")
    p.add_argument("--out", default="runs/eco_classifier_suite")
    args = p.parse_args()
    tf, tr = (int(x) for x in args.train.split(","))
    ef, er = (int(x) for x in args.test.split(","))
    task = TaskConfig(template="Review: {text}\nSentiment: {label}", generic_labels=["unknown"])
    data = load_unlearning_data(DataConfig(source=args.data, seed=args.seed,
                                           limits={"train_forget": tf, "train_retain": tr, "test_forget": ef, "test_retain": er}), Task(task))
    forget, retain = data["train_forget"]["text"].tolist(), data["train_retain"]["text"].tolist()
    embedder = CachedEmbedder()
    robust_aug = {"families": ["injection", "paraphrase", "entity", "combined"], "fraction": 1.0}
    started = time.time()
    classifiers = {
        "plain": train_classifier(ClassifierConfig(alpha=args.alpha, seed=args.seed, regularization=args.regularization), forget, retain, embedder=embedder),
        "robust": train_classifier(ClassifierConfig(alpha=args.alpha, seed=args.seed, regularization=args.regularization, augment=robust_aug), forget, retain, embedder=embedder),
    }
    train_seconds = time.time() - started
    suite = AttackSuite(seed=args.seed, entities=default_entities())
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for family in ["none", *FAMILIES]:
        rates[family] = {}
        for split in ("test_forget", "test_retain"):
            texts = [t for _, t, _ in attacked_rows(suite, family, split, data[split]["text"].tolist(), task.template)]
            for name, clf in classifiers.items():
                rates[family].setdefault(name, {})[split] = float(clf.flags(texts).mean())
    seconds = time.time() - started
    lines = [f"# ECO classifier under the attack suite (held-out pools; {args.data}; train {tf}/{tr}, test {ef}/{er}; seed {args.seed}; "
             f"conformal retain, alpha {args.alpha}, C {args.regularization})", "",
             "| family | forget flagged, plain | forget flagged, robust | retain flagged, plain | retain flagged, robust |", "|---|---:|---:|---:|---:|"]
    for family, r in rates.items():
        lines.append(f"| {family} | {100 * r['plain']['test_forget']:.1f} | {100 * r['robust']['test_forget']:.1f} | "
                     f"{100 * r['plain']['test_retain']:.1f} | {100 * r['robust']['test_retain']:.1f} |")
    lines += ["", f"Augmented rows of the robust classifier: {classifiers['robust'].info['augmented_rows']}",
              f"Training both classifiers: {train_seconds:.0f} s; whole script: {seconds:.0f} s wall."]
    out = Path(args.out)
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    write_json(out / "summary.json", {"rates": rates, "info": {k: c.info for k, c in classifiers.items()},
                                      "robust_augment": robust_aug, "config": to_dict(ClassifierConfig(alpha=args.alpha, seed=args.seed, regularization=args.regularization))})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
