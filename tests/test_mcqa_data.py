"""The multiple-choice task and the generated ``generated:mcqa`` data set."""

from __future__ import annotations

import pandas as pd
import pytest

from spul.data.generated import GENERATORS, MCQA_AGENTS, generate
from spul.data.sources import DataConfig, load_unlearning_data
from spul.data.splits import Split
from spul.data.tasks import MCQA_TEMPLATE, Task, TaskKind, multiple_choice_task_config
from spul.errors import DataError


def test_task_preset():
    cfg = multiple_choice_task_config()
    task = Task(cfg)
    assert task.kind is TaskKind.MULTIPLE_CHOICE and cfg.template == MCQA_TEMPLATE
    assert task.label_words == ["A", "B", "C", "D"]
    assert not {g.upper() for g in task.generic_labels} & {"A", "B", "C", "D"}
    assert [task.label_id(v) for v in ("C", "c", 2, "3", 0)] == [2, 2, 2, 3, 0]
    assert task.label_id("E") is None and task.label_id(4) is None


def test_generated_mcqa_raw_shape():
    raw = generate("mcqa", seed=0)
    assert "mcqa" in GENERATORS
    assert {s: len(df) for s, df in raw.items()} == {Split.TRAIN_FORGET: 80, Split.TRAIN_RETAIN: 240, Split.TEST_FORGET: 40, Split.TEST_RETAIN: 120}
    questions = [q for df in raw.values() for q in df["question"]]
    assert len(questions) == len(set(questions))  # no question in two splits (or twice in one)
    for split, df in raw.items():
        assert list(df.columns) == ["question", "choices", "label"]
        assert all(len(c) == 4 and len(set(c)) == 4 for c in df["choices"])
        counts = df["label"].value_counts()
        assert set(counts.index) == {"A", "B", "C", "D"} and counts.max() - counts.min() == 0
        about_agent = df["question"].map(lambda q: any(a in q for a in MCQA_AGENTS))
        assert about_agent.all() if split.is_forget else not about_agent.any()


def test_generated_mcqa_is_consistent_and_seeded():
    a, b, c = generate("mcqa", seed=0), generate("mcqa", seed=0), generate("mcqa", seed=1)
    assert all(a[s].equals(b[s]) for s in a)
    assert not a[Split.TRAIN_RETAIN].equals(c[Split.TRAIN_RETAIN])
    # an invented fact has one answer whatever the phrasing or split
    answers: dict[tuple[str, str], str] = {}
    for df in a.values():
        for q, ch, lab in zip(df["question"], df["choices"], df["label"]):
            answers.setdefault(q, ch["ABCD".index(lab)])
    assert answers


def test_generated_mcqa_loads_through_sources():
    data = load_unlearning_data(DataConfig(source="generated:mcqa"), Task(multiple_choice_task_config()))
    for _, df in data:
        assert df["label"].between(0, 3).all()
        for text in df["text"]:
            lines = text.splitlines()
            assert [line[:3] for line in lines[1:]] == ["A. ", "B. ", "C. ", "D. "]
    prompt = Task(multiple_choice_task_config()).prompt(data["train_forget"]["text"][0])
    assert prompt.startswith("### Question: ") and prompt.endswith("### Answer:")


def test_mcqa_labels_as_indices(tmp_path):
    raw = generate("mcqa", seed=2)
    for split, df in raw.items():
        out = df.assign(label=df["label"].map("ABCD".index), choices=df["choices"].map(lambda c: pd.io.json.ujson_dumps(c)))
        out.to_csv(tmp_path / f"{split.value}.csv", index=False)
    data = load_unlearning_data(DataConfig(source=str(tmp_path)), Task(multiple_choice_task_config()))
    assert data.label_counts()["train_forget"] == {0: 20, 1: 20, 2: 20, 3: 20}


def test_mcqa_wrong_choice_count(tmp_path):
    raw = generate("mcqa", seed=0)
    for split, df in raw.items():
        df.assign(choices=df["choices"].map(lambda c: __import__("json").dumps(c[:3]))).to_csv(tmp_path / f"{split.value}.csv", index=False)
    with pytest.raises(DataError, match="3 choices"):
        load_unlearning_data(DataConfig(source=str(tmp_path)), Task(multiple_choice_task_config()))
