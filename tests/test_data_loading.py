"""Loading, validating and encoding unlearning data."""

from __future__ import annotations

import pandas as pd
import pytest

from spul.data.encoding import TaskEncoder
from spul.data.sources import DataConfig, load_unlearning_data, write_splits
from spul.data.splits import Split
from spul.data.tasks import Task, TaskConfig
from spul.errors import ConfigError, DataError, ModelError


def _write(folder, frames, suffix=".csv"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        path = folder / f"{name}{suffix}"
        if suffix == ".csv":
            df.to_csv(path, index=False)
        elif suffix == ".jsonl":
            df.to_json(path, orient="records", lines=True)
        else:
            df.to_parquet(path)


def _frames(**override):
    base = {
        "train_forget": pd.DataFrame({"text": ["about anna, great", "anna was awful"], "label": [1, 0]}),
        "train_retain": pd.DataFrame({"text": ["a fine film", "a dull film", "loved it"], "label": [1, 0, 1]}),
        "test_forget": pd.DataFrame({"text": ["anna again, superb"], "label": ["positive"]}),
        "test_retain": pd.DataFrame({"text": ["bad acting", "good acting"], "label": ["negative", "positive"]}),
    }
    base.update(override)
    return base


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_local_folder_in_each_format_loads(tmp_path, suffix):
    _write(tmp_path / "d", _frames(), suffix)
    data = load_unlearning_data(DataConfig(source=str(tmp_path / "d")), Task())
    assert data.sizes() == {"train_retain": 3, "train_forget": 2, "test_retain": 2, "test_forget": 1}
    assert data[Split.TEST_RETAIN]["label"].tolist() == [0, 1]  # words mapped to ids


def test_prefixed_file_names_like_the_papers_load(tmp_path):
    folder = tmp_path / "v3"
    for name, df in _frames().items():
        df.to_csv(folder.mkdir(exist_ok=True) or folder / f"v3_{name}.csv", index=False)
    assert load_unlearning_data(DataConfig(source=str(folder)), Task()).sizes()["train_retain"] == 3


def test_the_real_sst2_splits_load_as_is(sst2_dir):
    data = load_unlearning_data(DataConfig(source=str(sst2_dir)), Task())
    assert data.sizes() == {"train_retain": 46331, "train_forget": 1425, "test_retain": 19855, "test_forget": 610}


def test_custom_column_names(tmp_path):
    frames = {k: v.rename(columns={"text": "sentence", "label": "y"}) for k, v in _frames().items()}
    _write(tmp_path / "d", frames)
    with pytest.raises(DataError, match="no column 'text'.*data.text_column"):
        load_unlearning_data(DataConfig(source=str(tmp_path / "d")), Task())
    data = load_unlearning_data(DataConfig(source=str(tmp_path / "d"), text_column="sentence", label_column="y"), Task())
    assert len(data[Split.TRAIN_FORGET]) == 2


def test_unknown_label_is_named(tmp_path):
    frames = _frames(test_retain=pd.DataFrame({"text": ["x"], "label": ["meh"]}))
    _write(tmp_path / "d", frames)
    with pytest.raises(DataError, match="label 'meh'.*not one of"):
        load_unlearning_data(DataConfig(source=str(tmp_path / "d")), Task())


def test_empty_split_is_rejected(tmp_path):
    _write(tmp_path / "d", _frames(test_forget=pd.DataFrame({"text": [], "label": []})))
    with pytest.raises(DataError, match="test_forget.*empty"):
        load_unlearning_data(DataConfig(source=str(tmp_path / "d")), Task())


def test_forget_retain_overlap_is_rejected(tmp_path):
    frames = _frames(train_retain=pd.DataFrame({"text": ["anna was awful", "ok"], "label": [0, 1]}))
    _write(tmp_path / "d", frames)
    with pytest.raises(DataError, match="both train_forget and train_retain"):
        load_unlearning_data(DataConfig(source=str(tmp_path / "d")), Task())


def test_missing_split_and_missing_folder(tmp_path):
    frames = _frames()
    frames.pop("test_forget")
    _write(tmp_path / "d", frames)
    with pytest.raises(DataError, match="test_forget"):
        load_unlearning_data(DataConfig(source=str(tmp_path / "d")), Task())
    with pytest.raises(DataError, match="neither a folder"):
        load_unlearning_data(DataConfig(source="./nowhere/at/all"), Task())


def test_generated_reviews_are_deterministic_and_disjoint():
    a = load_unlearning_data(DataConfig(), Task())
    b = load_unlearning_data(DataConfig(), Task())
    assert a.fingerprints() == b.fingerprints()
    assert load_unlearning_data(DataConfig(seed=1), Task()).fingerprints() != a.fingerprints()
    forget = set(a[Split.TRAIN_FORGET]["text"]) | set(a[Split.TEST_FORGET]["text"])
    retain = set(a[Split.TRAIN_RETAIN]["text"]) | set(a[Split.TEST_RETAIN]["text"])
    assert not forget & retain
    assert all(("Kettleby" in t) or ("Marrowind" in t) for t in forget)


def test_limits_subsample_reproducibly_and_write_round_trip(tmp_path):
    cfg = DataConfig(limits={"train_retain": 50})
    data = load_unlearning_data(cfg, Task())
    assert data.sizes()["train_retain"] == 50
    assert load_unlearning_data(cfg, Task()).fingerprints() == data.fingerprints()
    write_splits(data, tmp_path / "out")
    again = load_unlearning_data(DataConfig(source=str(tmp_path / "out")), Task())
    assert again.fingerprints() == data.fingerprints()


@pytest.mark.parametrize("bad", [{"limits": {"train_forgot": 3}}, {"limits": {"train_forget": 0}}, {"files": {"x": "y"}}])
def test_bad_data_config_values(bad):
    with pytest.raises(ConfigError):
        DataConfig(**bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"template": "no slots"}, "{text}"),
        ({"template": "{text} {label} more"}, "end with"),
        ({"label_words": ["only"]}, "at least two"),
        ({"generic_labels": ["positive"]}, "also task labels"),
        ({"label_words": ["a", "A"]}, "duplicates"),
    ],
)
def test_bad_task_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        TaskConfig(**kwargs)


def test_encoder_scores_multi_token_label_words(tiny_model):
    _, tokenizer = tiny_model
    # "truly great" is two word-level tokens; the others one
    task = Task(TaskConfig(label_words=["negative", "truly great"]))
    enc = TaskEncoder(task, tokenizer, max_length=64)
    assert [len(ids) for ids in enc.candidate_ids] == [1, 2, 1, 1, 1]
    prompt = enc.encode_prompts(["a fine film"])[0]
    assert prompt[: len(enc.head_ids)] == enc.head_ids and prompt[-len(enc.tail_ids):] == enc.tail_ids


def test_encoder_truncates_long_texts_inside_the_slot(tiny_model):
    _, tokenizer = tiny_model
    enc = TaskEncoder(Task(), tokenizer, max_length=32)
    prompt = enc.encode_prompts(["film " * 500])[0]
    assert len(prompt) + enc.max_answer_len <= 32
    assert prompt[-len(enc.tail_ids):] == enc.tail_ids  # the question survives truncation
    assert enc.truncated(["film " * 500, "short"]) == 1


def test_encoder_rejects_label_words_the_tokenizer_does_not_know(tiny_model):
    _, tokenizer = tiny_model
    with pytest.raises(ModelError, match="unknown to the tokenizer"):
        TaskEncoder(Task(TaskConfig(label_words=["negative", "zyzzyva"])), tokenizer, 64)
