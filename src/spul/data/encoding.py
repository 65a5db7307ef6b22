"""Turn task rows into token ids, and candidate answers into token sequences, for one tokenizer.

The prompt is tokenised in three pieces (template head, text, template tail) so that a long text can be
truncated inside its slot while the question and answer position survive. Each answer's ids are what the
tokenizer produces for ``tail + " word"`` beyond ``tail`` alone: exactly the tokens the model would emit
after the prompt, which also covers label words that split into several tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spul.data.tasks import Task
from spul.errors import ModelError

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

    def encode_prompts(self, texts: list[str]) -> list[list[int]]:
        lead = self.task.text_lead
        text_ids = self.tokenizer([lead + t for t in texts], add_special_tokens=False).input_ids
        cut = sum(len(ids) > self.text_budget for ids in text_ids)
        if cut:
            log.warning("%d of %d texts are longer than the %d tokens model.max_length=%d leaves for them and were truncated "
                        "(raise model.max_length to keep more)", cut, len(texts), self.text_budget, self.max_length)
        return [self.head_ids + list(ids[: self.text_budget]) + self.tail_ids for ids in text_ids]

    def truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` do not fit their slot and are cut."""
        lead = self.task.text_lead
        return sum(len(ids) > self.text_budget for ids in self.tokenizer([lead + t for t in texts], add_special_tokens=False).input_ids)
