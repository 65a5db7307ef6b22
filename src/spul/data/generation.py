"""Encode generative rows (``qa``, ``completion``) into prompt ids + answer ids, and collate them.

The output is the same ``EncodedExample`` the answer-level trainers use (``methods/training.py``): the
collator there left-pads ``prompt + answer[:-1]`` and right-aligns the answer in ``labels [B, K]``, so the
loss covers every answer token whatever its length. ``collate_answers`` below builds exactly that layout in
the data layer (for evaluation and for tests that check the masks).

An answer's ids are what the tokenizer produces for the prompt followed by the answer, beyond the prompt
alone (falling back to the answer tokenised on its own when the tokenizer merges across the boundary), plus
the end-of-sequence token so that a trained model learns where to stop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from spul.data.encoding import EncodedExample
from spul.data.tasks import GenerationTask, TaskKind
from spul.errors import DataError, ModelError

log = logging.getLogger(__name__)

IGNORE = -100  # the label of positions without a loss; equal to spul.methods.losses.IGNORE
NO_LABEL = -1  # EncodedExample.label of a generative row (it has no class)


@dataclass(frozen=True)
class GenerationBatch:
    """Left-padded ``prompt + answer[:-1]`` ids and mask ``[B, T]``, answers right-aligned in ``labels [B, K]``."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    labels: list[list[int]]


class GenerationEncoder:
    """Token ids of generative prompts and answers for one tokenizer.

    ``max_length`` bounds prompt + answer; ``max_answer_length`` bounds the answer (longer answers are cut,
    keeping their start). Prompts that leave no room are cut from the left, so the end of the prompt (the
    question and the answer cue) survives.
    """

    def __init__(self, task: GenerationTask, tokenizer, max_length: int = 256, max_answer_length: int = 64,
                 append_eos: bool = True):
        if max_answer_length < 1 or max_length <= max_answer_length:
            raise ModelError(f"max_length={max_length} must exceed max_answer_length={max_answer_length} (both positive)",
                             "raise model.max_length or lower the answer length")
        self.task = task
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_answer_length = max_answer_length
        self.append_eos = append_eos and tokenizer.eos_token_id is not None
        self.chat = task.uses_chat(tokenizer)
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise ModelError("the tokenizer has neither a pad nor an EOS token", "set tokenizer.pad_token before encoding")

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def _tokens(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special).input_ids)

    def prompt_text(self, value: str) -> str:
        return self.task.prompt(value, self.tokenizer)

    def encode_prompt(self, value: str) -> list[int]:
        """Ids of one prompt (special tokens the tokenizer adds at the start kept, a trailing EOS dropped)."""
        text = self.prompt_text(value)
        ids = self._tokens(text, special=not self.chat)  # a chat template already holds its special tokens
        eos = self.tokenizer.eos_token_id
        if len(ids) > 1 and eos is not None and ids[-1] == eos and not text.endswith(self.tokenizer.eos_token or "\0"):
            ids = ids[:-1]  # tokenizers that append EOS: the prompt goes on
        budget = self.max_length - self.max_answer_length
        if len(ids) > budget:
            ids = ids[:1] + ids[len(ids) - budget + 1:] if self.tokenizer.bos_token_id == ids[0] else ids[-budget:]
        return ids

    def encode_answer(self, value: str, answer: str) -> list[int]:
        """Ids of ``answer`` as it follows ``value``'s prompt, EOS appended, at most ``max_answer_length``."""
        return self._answer(value, answer)[0]

    def _answer(self, value: str, answer: str) -> tuple[list[int], bool]:
        prompt = self.prompt_text(value)
        follow = self.task.answer_text(answer, self.tokenizer)
        if not follow.strip():
            raise DataError(f"empty answer for prompt {str(value)[:60]!r}", "remove the row or fill its answer")
        head = self._tokens(prompt, special=False)
        full = self._tokens(prompt + follow, special=False)
        ids = full[len(head):] if full[: len(head)] == head else self._tokens(follow, special=False)
        if not ids:
            raise DataError(f"answer {answer[:60]!r} tokenises to nothing", "remove the row or fill its answer")
        room = self.max_answer_length - (1 if self.append_eos else 0)
        cut = len(ids) > room
        ids = ids[:room]
        return (ids + [self.tokenizer.eos_token_id] if self.append_eos else ids), cut

    def encode(self, values: list[str], answers: list[str], is_forget: bool = False) -> list[EncodedExample]:
        """One ``EncodedExample`` per row (``label`` = ``NO_LABEL``, ``index`` = row number)."""
        if len(values) != len(answers):
            raise DataError(f"{len(values)} prompts but {len(answers)} answers", "give one answer per prompt")
        out = []
        cut = 0
        for i, (value, answer) in enumerate(zip(values, answers)):
            prompt = self.encode_prompt(value)
            target, was_cut = self._answer(value, answer)
            cut += was_cut
            out.append(EncodedExample(prompt_ids=prompt, target_ids=target, label=NO_LABEL, is_forget=is_forget, index=i))
        if cut:
            log.warning("%d of %d answers are longer than max_answer_length=%d tokens and were cut", cut, len(out),
                        self.max_answer_length)
        return out

    def encode_frame(self, df: pd.DataFrame, answer_column: str | None = None, is_forget: bool = False) -> list[EncodedExample]:
        """Encode a table with the task's input column and ``answer_column`` (default: the task's target column)."""
        cfg = self.task.config
        column = answer_column or cfg.target_column
        for col in (cfg.input_column, column):
            if col not in df.columns:
                raise DataError(f"the data has no column {col!r}; columns are {list(df.columns)}",
                                "name the right column in the generation task config")
        return self.encode(df[cfg.input_column].astype(str).tolist(), df[column].astype(str).tolist(), is_forget)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def collate_answers(examples: list[EncodedExample], pad_id: int) -> GenerationBatch:
    """The answer-level training layout: left-padded ``prompt + answer[:-1]``; ``labels [B, K]`` holds every
    answer token right-aligned (position ``-k`` of the input predicts ``labels[:, -k]``), ``IGNORE`` elsewhere."""
    if not examples:
        raise DataError("no examples to collate", "pass at least one example")
    seqs = [ex.prompt_ids + ex.target_ids[:-1] for ex in examples]
    width = max(len(s) for s in seqs)
    k = max(len(ex.target_ids) for ex in examples)
    input_ids = [[pad_id] * (width - len(s)) + s for s in seqs]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in seqs]
    labels = [[IGNORE] * (k - len(ex.target_ids)) + list(ex.target_ids) for ex in examples]
    return GenerationBatch(input_ids, mask, labels)


def full_sequence_labels(example: EncodedExample) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` in the Hugging Face causal-LM convention (labels shifted inside the model):
    the whole prompt + answer, prompt positions ``IGNORE``, every answer token labelled."""
    ids = example.prompt_ids + example.target_ids
    return ids, [IGNORE] * len(example.prompt_ids) + list(example.target_ids)


def is_generative(kind: TaskKind | str) -> bool:
    return TaskKind(kind).is_generative


def passage_examples(tokenizer, texts: list[str], max_length: int = 256, is_forget: bool = False) -> list[EncodedExample]:
    """Whole passages as language-modelling examples: each passage is cut into windows of ``max_length``
    tokens; in each window the first token is the prompt and every later token a target."""
    out: list[EncodedExample] = []
    for i, text in enumerate(texts):
        ids = list(tokenizer(text, add_special_tokens=True).input_ids)
        for start in range(0, max(len(ids) - 1, 1), max_length - 1):
            window = ids[start : start + max_length]
            if len(window) >= 2:
                out.append(EncodedExample(prompt_ids=window[:1], target_ids=window[1:], label=NO_LABEL, is_forget=is_forget, index=i))
    return out


def build_generation_examples(data, encoder: GenerationEncoder, *, forget_target: str = "refusal", seed: int = 0,
                              include_forget: bool = True, include_retain: bool = True) -> list[EncodedExample]:
    """Training examples from a ``GenerationData``'s ``forget`` and ``retain`` sets.

    ``forget_target``: ``refusal`` (each forget question is trained toward one of ``task.refusals``, drawn
    uniformly with ``seed`` and fixed for the run: SPUL's generic answer, IDK-style targets) or ``true`` (the
    real answer: familiarisation, gradient ascent). Passage (completion) data trains on the passages
    themselves, so only ``true`` applies to it.
    """
    import numpy as np

    from spul.errors import ConfigError

    if forget_target not in ("refusal", "true"):
        raise ConfigError(f"forget_target={forget_target!r} is not refusal or true", "use refusal (SPUL, IDK) or true (fine-tune, GA)")
    examples: list[EncodedExample] = []
    for name, wanted in (("forget", include_forget), ("retain", include_retain)):
        if not wanted:
            continue
        df = data[name]
        forget = name == "forget"
        if data.kind is TaskKind.COMPLETION:
            if forget and forget_target == "refusal":
                raise ConfigError("a refusal target does not apply to passages", "use forget_target=true for passage data")
            examples += passage_examples(encoder.tokenizer, df["text"].astype(str).tolist(), encoder.max_length, forget)
            continue
        answers = df["answer"].astype(str).tolist()
        if forget and forget_target == "refusal":
            refusals = encoder.task.refusals
            picks = np.random.default_rng(seed).integers(0, len(refusals), size=len(df))
            answers = [refusals[int(k)] for k in picks]
        examples += encoder.encode(df["question"].astype(str).tolist(), answers, is_forget=forget)
    return examples
