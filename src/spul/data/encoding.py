"""Turn task rows into token ids, and candidate answers into token sequences, for one tokenizer.

The prompt is tokenised in three pieces (template head, text, template tail) so that a long text can be
truncated inside its slot while the question and answer position survive. Each answer's ids are what the
tokenizer produces for ``tail + " word"`` beyond ``tail`` alone: exactly the tokens the model would emit
after the prompt, which also covers label words that split into several tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spul.data.tasks import Task, TaskKind
from spul.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedExample:
    prompt_ids: list[int]
    target_ids: list[int]
    label: int
    is_forget: bool
    index: int


class TaskEncoder:
    def __init__(self, task: Task, tokenizer, max_length: int = 256):
        self.task = task
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.head_ids = list(tokenizer(task.prompt_before_text, add_special_tokens=True).input_ids)
        eos = tokenizer.eos_token_id
        if self.head_ids and eos is not None and self.head_ids[-1] == eos and len(self.head_ids) > 1:
            self.head_ids = self.head_ids[:-1]  # tokenizers that append EOS: the prompt goes on
        self.tail_ids = list(tokenizer(task.prompt_after_text, add_special_tokens=False).input_ids)
        self.candidate_ids: list[list[int]] = [self._answer_ids(w) for w in task.candidates]
        seen: dict[tuple[int, ...], str] = {}
        for word, ids in zip(task.candidates, self.candidate_ids):
            if tuple(ids) in seen:
                raise ModelError(
                    f"answers {seen[tuple(ids)]!r} and {word!r} tokenise to the same ids {ids}",
                    "choose label words / generic labels that the tokenizer tells apart",
                )
            seen[tuple(ids)] = word
        self.max_answer_len = max(len(ids) for ids in self.candidate_ids)
        self.text_budget = max_length - len(self.head_ids) - len(self.tail_ids) - self.max_answer_len
        if self.text_budget < 4:
            raise ModelError(
                f"model.max_length={max_length} leaves {self.text_budget} tokens for the text after the template",
                "raise model.max_length or shorten task.template",
            )

    @property
    def label_ids(self) -> list[list[int]]:
        return self.candidate_ids[: self.task.num_labels]

    @property
    def generic_ids(self) -> list[list[int]]:
        return self.candidate_ids[self.task.num_labels :]

    def _answer_ids(self, word: str) -> list[int]:
        full = list(self.tokenizer(self.task.prompt_after_text + self.task.answer(word), add_special_tokens=False).input_ids)
        if full[: len(self.tail_ids)] != self.tail_ids:
            # the tokenizer merged the answer into the template's last token; fall back to the word alone
            ids = list(self.tokenizer(self.task.answer(word), add_special_tokens=False).input_ids)
        else:
            ids = full[len(self.tail_ids):]
        if not ids:
            raise ModelError(f"answer {word!r} tokenises to nothing", "choose a different label word")
        unk = self.tokenizer.unk_token_id
        if unk is not None and unk in ids and unk not in self.tail_ids:
            raise ModelError(f"answer {word!r} is unknown to the tokenizer (maps to <unk>)", "choose label words the model's vocabulary has")
        return ids

    def _split_choices(self, text: str) -> tuple[str, str] | None:
        """A multiple-choice text as (question, "\nA. …\nB. …"), or None if it has no lettered choice block."""
        lines = text.split("\n")
        n = self.task.num_labels
        if len(lines) <= n:
            return None
        block = lines[-n:]
        if not all(line.startswith(f"{letter}.") for line, letter in zip(block, self.task.label_words)):
            return None
        return "\n".join(lines[:-n]), "\n" + "\n".join(block)

    def _fit_multiple_choice(self, texts: list[str], text_ids: list[list[int]]) -> tuple[list[list[int]], int]:
        """Over-long multiple-choice texts lose the end of their question, never a choice."""
        out, cut = [], 0
        for text, ids in zip(texts, text_ids):
            parts = self._split_choices(text) if len(ids) > self.text_budget else None
            if parts is None:
                out.append(list(ids))
                continue
            question, block = parts
            q_ids = self.tokenizer(self.task.text_lead + question, add_special_tokens=False).input_ids
            c_ids = self.tokenizer(block, add_special_tokens=False).input_ids
            room = self.text_budget - len(c_ids)
            if room < 1:
                raise ConfigError(
                    f"the answer choices of a multiple-choice question take {len(c_ids)} tokens, more than the {self.text_budget} that "
                    f"model.max_length={self.max_length} leaves for question and choices ({question[:40]!r}…)",
                    f"raise model.max_length to at least {self.max_length - room + 8}",
                )
            out.append(list(q_ids[:room]) + list(c_ids))
            cut += 1
        return out, cut

    def encode_prompts(self, texts: list[str]) -> list[list[int]]:
        lead = self.task.text_lead
        text_ids = self.tokenizer([lead + t for t in texts], add_special_tokens=False).input_ids
        if self.task.kind is TaskKind.MULTIPLE_CHOICE:
            text_ids, cut = self._fit_multiple_choice(texts, text_ids)
            if cut:
                log.warning("%d of %d multiple-choice questions are longer than model.max_length=%d allows; their question text was "
                            "shortened, all choices kept (raise model.max_length to keep more)", cut, len(texts), self.max_length)
            return [self.head_ids + ids + self.tail_ids for ids in text_ids]
        cut = sum(len(ids) > self.text_budget for ids in text_ids)
        if cut:
            log.warning("%d of %d texts are longer than the %d tokens model.max_length=%d leaves for them and were truncated "
                        "(raise model.max_length to keep more)", cut, len(texts), self.text_budget, self.max_length)
        return [self.head_ids + list(ids[: self.text_budget]) + self.tail_ids for ids in text_ids]

    def truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` do not fit their slot and are cut."""
        lead = self.task.text_lead
        return sum(len(ids) > self.text_budget for ids in self.tokenizer([lead + t for t in texts], add_special_tokens=False).input_ids)
