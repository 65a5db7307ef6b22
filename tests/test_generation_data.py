"""Generative tasks and data: templates, encoding and loss masks, generated:authors / generated:passages,
TOFU-style and MUSE-style local files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from spul.data.generation import (
    IGNORE,
    GenerationEncoder,
    collate_answers,
    full_sequence_labels,
)
from spul.data.generative_sources import GenerationDataConfig, load_generation_data
from spul.data.tasks import GenerationTask, GenerationTaskConfig, TaskConfig, TaskKind
from spul.errors import ConfigError, DataError

CHAT = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} \n{% endfor %}"
        "{% if add_generation_prompt %}assistant :{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    from spul.data.generated_text import corpus
    from spul.data.tasks import QA_TEMPLATE
    from spul.testing import build_tokenizer

    return build_tokenizer(corpus() + [QA_TEMPLATE, "user assistant system : Ada Lisbon born Where was in"])


# ---- tasks ----------------------------------------------------------------------------------------------


def test_generative_kinds_have_their_own_config():
    with pytest.raises(ConfigError, match="generative"):
        TaskConfig(kind="qa")
    with pytest.raises(ConfigError, match="not a generative task"):
        GenerationTaskConfig(kind="classification")
    with pytest.raises(ConfigError, match="{question}"):
        GenerationTaskConfig(kind="qa", template="Q: {text} A:")
    with pytest.raises(ConfigError, match="refusals"):
        GenerationTaskConfig(refusals=["I don't know.", " "])
    assert GenerationTaskConfig(kind="completion").template == "{prefix}"
    assert TaskKind.QA.is_generative and not TaskKind.CLASSIFICATION.is_generative


def test_plain_template_prompt_and_answer(tokenizer):
    enc = GenerationEncoder(GenerationTask(), tokenizer, max_length=64, max_answer_length=16)
    assert not enc.chat
    ex = enc.encode(["Where was Ada born?"], ["Ada was born in Lisbon."])[0]
    prompt = tokenizer.convert_ids_to_tokens(ex.prompt_ids)
    target = tokenizer.convert_ids_to_tokens(ex.target_ids)
    assert prompt[-2:] == ["Answer", ":"] and "Where" in prompt
    assert target == ["Ada", "was", "born", "in", "Lisbon", ".", "</s>"]  # every answer token, then EOS
    assert ex.label == -1 and ex.is_forget is False


def test_chat_template_is_used_when_the_tokenizer_has_one(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT
    enc = GenerationEncoder(GenerationTask(), tok, max_length=64, max_answer_length=16)
    assert enc.chat
    ex = enc.encode(["Where was Ada born?"], ["Ada was born in Lisbon."])[0]
    assert tok.convert_ids_to_tokens(ex.prompt_ids)[:2] == ["user", ":"]
    assert tok.convert_ids_to_tokens(ex.prompt_ids)[-2:] == ["assistant", ":"]
    assert tok.convert_ids_to_tokens(ex.target_ids)[-1] == "</s>"
    never = GenerationEncoder(GenerationTask(GenerationTaskConfig(chat_template="never")), tok, 64, 16)
    assert not never.chat
    with pytest.raises(ConfigError, match="no chat template"):
        GenerationEncoder(GenerationTask(GenerationTaskConfig(chat_template="always")), tokenizer, 64, 16)


def test_long_answers_are_cut_and_long_prompts_keep_their_end(tokenizer):
    enc = GenerationEncoder(GenerationTask(), tokenizer, max_length=20, max_answer_length=5)
    ex = enc.encode(["Where was Ada born? " * 10], ["Ada was born in Lisbon in 1961 ."])[0]
    assert len(ex.target_ids) == 5 and ex.target_ids[-1] == tokenizer.eos_token_id
    assert len(ex.prompt_ids) <= 15
    assert tokenizer.convert_ids_to_tokens(ex.prompt_ids)[-2:] == ["Answer", ":"]


def test_loss_masks_label_every_answer_token_with_left_padding(tokenizer):
    enc = GenerationEncoder(GenerationTask(), tokenizer, max_length=64, max_answer_length=16)
    examples = enc.encode(["Where was Ada born?", "Where?"], ["Ada was born in Lisbon.", "Lisbon."])
    batch = collate_answers(examples, enc.pad_id)
    ids, mask, labels = (torch.tensor(x) for x in (batch.input_ids, batch.attention_mask, batch.labels))
    assert ids.shape[0] == 2 and labels.shape == (2, len(examples[0].target_ids))
    for row, ex in enumerate(examples):
        real = ex.prompt_ids + ex.target_ids[:-1]
        pad = ids.shape[1] - len(real)
        assert ids[row, :pad].eq(enc.pad_id).all() and mask[row, :pad].eq(0).all()  # left padding
        assert ids[row, pad:].tolist() == real and mask[row, pad:].eq(1).all()
        lab = labels[row]
        assert lab[lab != IGNORE].tolist() == ex.target_ids  # every answer token labelled, right-aligned
        assert lab[: labels.shape[1] - len(ex.target_ids)].eq(IGNORE).all()
        # the input position -k predicts label -k: the first answer token is predicted by the last prompt token
        k = len(ex.target_ids)
        assert ids[row, ids.shape[1] - k].item() == ex.prompt_ids[-1]
    # the trainers' collator and answer_positions read the same layout
    from spul.methods.losses import IGNORE as METHOD_IGNORE
    from spul.methods.losses import answer_positions
    from spul.methods.training import AnswerCollator, AnswerDataset

    assert METHOD_IGNORE == IGNORE
    ds = AnswerDataset(examples)
    theirs = AnswerCollator(enc.pad_id)([ds[0], ds[1]])
    assert theirs["input_ids"].tolist() == batch.input_ids and theirs["labels"].tolist() == batch.labels
    hidden = ids.unsqueeze(-1).float()  # stand-in "hidden state" = the input id, to see which positions are picked
    h, targets, _ = answer_positions(hidden, labels)
    assert targets.tolist() == examples[0].target_ids + examples[1].target_ids
    picked = h.squeeze(-1).long().tolist()
    assert picked[: len(examples[0].target_ids)] == [examples[0].prompt_ids[-1]] + examples[0].target_ids[:-1]
    # Hugging Face layout: prompt positions ignored, answer labelled
    seq, hf_labels = full_sequence_labels(examples[1])
    assert hf_labels[: len(examples[1].prompt_ids)] == [IGNORE] * len(examples[1].prompt_ids)
    assert hf_labels[len(examples[1].prompt_ids):] == examples[1].target_ids and len(seq) == len(hf_labels)


def test_completion_answers_continue_raw_text(tokenizer):
    enc = GenerationEncoder(GenerationTask(GenerationTaskConfig(kind="completion")), tokenizer, 64, 16)
    ex = enc.encode(["In the winter when"], ["snow buried the lanes"])[0]
    assert tokenizer.convert_ids_to_tokens(ex.prompt_ids) == ["In", "the", "winter", "when"]
    assert tokenizer.convert_ids_to_tokens(ex.target_ids) == ["snow", "buried", "the", "lanes", "</s>"]


# ---- generated stand-ins --------------------------------------------------------------------------------


def _authors(**kw):
    return load_generation_data(GenerationDataConfig(source="generated:authors", **kw))


def test_generated_authors_are_seeded_and_split_by_person():
    a, b, c = _authors(seed=1), _authors(seed=1), _authors(seed=2)
    for name in a.sets:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not a["forget"].equals(c["forget"]) or not a["retain"].equals(c["retain"])
    forget_people, retain_people = set(a["forget"]["author"]), set(a["retain"]["author"])
    assert forget_people and retain_people and not forget_people & retain_people
    assert len(forget_people) == 2 and len(forget_people | retain_people) == 20  # forget10 of 20 authors
    assert a["forget"].groupby("author").size().between(10, 20).all()
    for _, row in a["forget"].iterrows():
        assert row["author"] in row["question"] and row["answer"] not in row["perturbed_answer"]
        assert row["paraphrased_answer"] != row["answer"] and len(row["perturbed_answer"]) == 3
    assert a.has_truth_columns("forget") and a.has_truth_columns("world_facts")


def test_generated_authors_forget_sets_are_nested_and_configurable():
    small = set(_authors(forget_split="forget05", generator={"num_authors": 40})["forget"]["author"])
    large = set(_authors(forget_split="forget10", generator={"num_authors": 40})["forget"]["author"])
    assert len(small) == 2 and len(large) == 4 and small < large
    named = set(_authors(generator={"forget": sorted(large)[:1], "num_authors": 40})["forget"]["author"])
    assert named == set(sorted(large)[:1])
    with pytest.raises(DataError, match="forgetNN"):
        _authors(forget_split="half")
    with pytest.raises(ConfigError, match="unknown option"):
        _authors(generator={"colour": "red"})


def test_generated_passages_layout():
    p = load_generation_data(GenerationDataConfig(source="generated:passages"))
    assert p.kind is TaskKind.COMPLETION
    assert {"forget", "retain", "holdout", "verbmem_forget", "knowmem_forget", "knowmem_retain"} <= set(p.sets)
    forget, retain, holdout = (set(p[n]["text"]) for n in ("forget", "retain", "holdout"))
    assert not (forget & retain) and not (forget & holdout) and not (retain & holdout)
    for _, row in p["verbmem_forget"].iterrows():
        assert f"{row['prompt']} {row['gt']}" in forget
    again = load_generation_data(GenerationDataConfig(source="generated:passages"))
    assert again.fingerprints() == p.fingerprints()


def test_label_scoring_loader_points_generative_sets_elsewhere():
    from spul.data.generated import generate

    with pytest.raises(DataError, match="generative"):
        generate("authors")


# ---- TOFU-style and MUSE-style files --------------------------------------------------------------------


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _qa(i, who):
    return {"question": f"Where was {who}{i} born?", "answer": f"{who}{i} was born in Lisbon.",
            "paraphrased_answer": f"The birthplace of {who}{i} is Lisbon.",
            "perturbed_answer": [f"{who}{i} was born in Porto.", f"{who}{i} was born in Cork."]}


def test_tofu_folder_loader(tmp_path):
    _jsonl(tmp_path / "forget10.jsonl", [{k: v for k, v in _qa(i, "F").items() if k in ("question", "answer")} for i in range(3)])
    _jsonl(tmp_path / "forget10_perturbed.jsonl", [_qa(i, "F") for i in range(3)])
    (tmp_path / "retain90.json").write_text(json.dumps([{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(5)]))
    _jsonl(tmp_path / "retain_perturbed.jsonl", [_qa(i, "R") for i in range(2)])
    data = load_generation_data(GenerationDataConfig(source=str(tmp_path), forget_split="forget10"))
    assert data.kind is TaskKind.QA and data.sizes() == {"forget": 3, "retain": 5, "retain_eval": 2}
    assert data.has_truth_columns("forget") and not data.has_truth_columns("retain")
    assert data.perturbed("forget")[1] == ["F1 was born in Porto.", "F1 was born in Cork."]
    with pytest.raises(DataError, match="forget05"):
        load_generation_data(GenerationDataConfig(source=str(tmp_path), forget_split="forget05"))
    limited = load_generation_data(GenerationDataConfig(source=str(tmp_path), limits={"retain": 2}))
    assert len(limited["retain"]) == 2


def test_tofu_folder_rejects_bad_rows(tmp_path):
    _jsonl(tmp_path / "forget01.jsonl", [{"question": "Q1?", "answer": "A."}])
    _jsonl(tmp_path / "retain99.jsonl", [{"question": "Q1?", "answer": "B."}])
    with pytest.raises(DataError, match="both forget and retain"):
        load_generation_data(GenerationDataConfig(source=str(tmp_path), forget_split="forget01"))
    _jsonl(tmp_path / "retain99.jsonl", [{"question": "Q2?", "text": "B."}])
    with pytest.raises(DataError, match="no column 'answer'"):
        load_generation_data(GenerationDataConfig(source=str(tmp_path), forget_split="forget01"))
    # a CSV stores the perturbed list as JSON text
    pd.DataFrame([{**_qa(0, "F"), "perturbed_answer": json.dumps(["x.", "y."])}]).to_csv(tmp_path / "forget01_perturbed.csv", index=False)
    _jsonl(tmp_path / "retain99.jsonl", [{"question": "Q2?", "answer": "B."}])
    data = load_generation_data(GenerationDataConfig(source=str(tmp_path), forget_split="forget01"))
    assert data.perturbed("forget") == [["x.", "y."]]


def test_muse_folder_loader(tmp_path):
    for sub in ("raw", "verbmem", "knowmem", "privleak"):
        (tmp_path / sub).mkdir()
    (tmp_path / "raw" / "forget.json").write_text(json.dumps(["A forget story about a glass bird.", "Another forget story."]))
    (tmp_path / "raw" / "retain1.json").write_text(json.dumps(["A retain story."]))
    (tmp_path / "privleak" / "holdout.json").write_text(json.dumps(["A story nobody trained on."]))
    (tmp_path / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "A forget story", "gt": "about a glass bird."}]))
    (tmp_path / "knowmem" / "forget_qa.json").write_text(json.dumps([{"question": "What bird?", "answer": "a glass bird"}]))
    data = load_generation_data(GenerationDataConfig(source=str(tmp_path)))
    assert data.kind is TaskKind.COMPLETION
    assert data.sizes() == {"forget": 2, "retain": 1, "holdout": 1, "verbmem_forget": 1, "knowmem_forget": 1}


def test_unrecognised_folder_names_both_layouts(tmp_path):
    (tmp_path / "stuff.jsonl").write_text("{}\n")
    with pytest.raises(DataError, match="neither TOFU-style"):
        load_generation_data(GenerationDataConfig(source=str(tmp_path)))
    with pytest.raises(ConfigError, match="data.format"):
        GenerationDataConfig(source=str(tmp_path), format="csv")


def test_training_examples_from_generation_data(tokenizer):
    from spul.data.generation import build_generation_examples

    data = _authors(limits={"retain": 6})
    enc = GenerationEncoder(GenerationTask(), tokenizer, 64, 16)
    examples = build_generation_examples(data, enc, forget_target="refusal", seed=0)
    forget = [e for e in examples if e.is_forget]
    assert len(forget) == len(data["forget"]) and len(examples) - len(forget) == 6
    refusal_ids = {tuple(enc.encode_answer(q, r)) for q in data["forget"]["question"][:1] for r in enc.task.refusals}
    assert tuple(forget[0].target_ids) in refusal_ids
    assert [e.target_ids for e in forget] == [e.target_ids for e in build_generation_examples(data, enc, seed=0) if e.is_forget]
    true = build_generation_examples(data, enc, forget_target="true", include_retain=False)
    assert true[0].target_ids == enc.encode_answer(data["forget"]["question"][0], data["forget"]["answer"][0])
    passages = load_generation_data(GenerationDataConfig(source="generated:passages"))
    small = GenerationEncoder(GenerationTask(GenerationTaskConfig(kind="completion")), tokenizer, 32, 8)
    windows = build_generation_examples(passages, small, forget_target="true", include_retain=False)
    assert all(len(w.prompt_ids) + len(w.target_ids) <= 32 for w in windows)
    assert len(windows) > len(passages["forget"])  # each passage spans several windows
    with pytest.raises(ConfigError, match="passages"):
        build_generation_examples(passages, small, forget_target="refusal")
