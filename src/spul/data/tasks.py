"""A task says how a row becomes a prompt, which answers are valid, and which answers mean "I don't know".

The model is asked to complete a template whose last slot is ``{label}``; every candidate answer (a label
word or a generic label) is scored as a whole word, so label words that tokenise into several tokens work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from spul.errors import ConfigError

PAPER_TEMPLATE = (
    "### Text: {text}\n\n### Question: What is the sentiment of the given text?\n\n### Sentiment: {label}"
)
MCQA_TEMPLATE = "### Question: {text}\n\n### Answer: {label}"
DEFAULT_GENERIC_LABELS = ("neutral", "unknown", "None")


class TaskKind(str, enum.Enum):
    CLASSIFICATION = "classification"
    MULTIPLE_CHOICE = "multiple_choice"


@dataclass
class TaskConfig:
    """How rows are rendered and answered. ``label_words[i]`` is the answer for label id ``i``."""

    kind: TaskKind = TaskKind.CLASSIFICATION
    template: str = PAPER_TEMPLATE
    label_words: list[str] = field(default_factory=lambda: ["negative", "positive"])
    generic_labels: list[str] = field(default_factory=lambda: list(DEFAULT_GENERIC_LABELS))
    # multiple choice only: the columns holding the question and the list of choices
    question_column: str = "question"
    choices_column: str = "choices"

    def __post_init__(self) -> None:
        self.kind = TaskKind(self.kind)
        if self.template.count("{text}") != 1:
            raise ConfigError("task.template must contain '{text}' exactly once", "put '{text}' where the input goes")
        if self.template.count("{label}") != 1 or not self.template.rstrip().endswith("{label}"):
            raise ConfigError(
                "task.template must end with '{label}' (the answer slot) and contain it once",
                "end the template with e.g. '### Sentiment: {label}'",
            )
        if self.template.index("{text}") > self.template.index("{label}"):
            raise ConfigError("task.template has '{label}' before '{text}'", "put the answer slot '{label}' last")
        if len(self.label_words) < 2:
            raise ConfigError("task.label_words needs at least two labels", "list them, e.g. [negative, positive]")
        for name, words in (("label_words", self.label_words), ("generic_labels", self.generic_labels)):
            if any(not str(w).strip() for w in words):
                raise ConfigError(f"task.{name} contains an empty word", f"remove the empty entry from task.{name}")
            if len({str(w).strip().lower() for w in words}) != len(words):
                raise ConfigError(f"task.{name} contains duplicates: {words}", f"list each word once in task.{name}")
        if not self.generic_labels:
            raise ConfigError("task.generic_labels is empty", "give at least one generic answer, e.g. [neutral]")
        clash = {w.strip().lower() for w in self.label_words} & {w.strip().lower() for w in self.generic_labels}
        if clash:
            raise ConfigError(
                f"generic labels {sorted(clash)} are also task labels",
                "generic labels must differ from task.label_words",
            )
        self.label_words = [str(w).strip() for w in self.label_words]
        self.generic_labels = [str(w).strip() for w in self.generic_labels]


class Task:
    """Renders prompts and lists answers for a ``TaskConfig``."""

    def __init__(self, config: TaskConfig | None = None):
        self.config = config or TaskConfig()
        template = self.config.template.rstrip()
        head, _ = template.split("{label}")
        # The answer follows the head's trailing whitespace (usually one space): it belongs to the answer so
        # that the prompt ends on the colon and the answer word keeps its natural leading-space token.
        stripped = head.rstrip(" ")
        self.answer_separator = head[len(stripped):]
        before, after = stripped.split("{text}")
        # Whitespace right before {text} travels with the text for the same reason.
        text_lead = before[len(before.rstrip(" ")):]
        self.prompt_before_text = before.rstrip(" ")
        self.text_lead = text_lead
        self.prompt_after_text = after

    @property
    def kind(self) -> TaskKind:
        return self.config.kind

    @property
    def label_words(self) -> list[str]:
        return self.config.label_words

    @property
    def generic_labels(self) -> list[str]:
        return self.config.generic_labels

    @property
    def num_labels(self) -> int:
        return len(self.config.label_words)

    @property
    def candidates(self) -> list[str]:
        """Everything the model may answer: task labels first (ids 0..n-1), then the generic labels."""
        return self.label_words + self.generic_labels

    def prompt(self, text: str) -> str:
        """The full prompt up to (not including) the answer."""
        return f"{self.prompt_before_text}{self.text_lead}{text}{self.prompt_after_text}"

    def answer(self, word: str) -> str:
        return f"{self.answer_separator}{word}"

    def label_id(self, value: object) -> int | None:
        """Map a label cell (id, label word, or a string id) to a label id; None if it is not a task label."""
        if isinstance(value, bool):
            return None
        if isinstance(value, (int,)) or (isinstance(value, float) and float(value).is_integer()):
            idx = int(value)
            return idx if 0 <= idx < self.num_labels else None
        if hasattr(value, "item"):
            return self.label_id(value.item())
        text = str(value).strip()
        lowered = [w.lower() for w in self.label_words]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.lstrip("-").isdigit():
            return self.label_id(int(text))
        return None


def format_multiple_choice(question: str, choices: list[str], letters: list[str]) -> str:
    """Question followed by one line per lettered choice, e.g. ``A. first``."""
    if len(choices) != len(letters):
        raise ValueError(f"{len(choices)} choices for {len(letters)} answer letters")
    lines = [str(question).strip()] + [f"{letter}. {str(choice).strip()}" for letter, choice in zip(letters, choices)]
    return "\n".join(lines)


MCQA_LETTERS = ["A", "B", "C", "D"]
MCQA_GENERIC_LABELS = ["E", "unknown", "None"]


def multiple_choice_task_config(
    letters: list[str] | None = None, generic_labels: list[str] | None = None, template: str = MCQA_TEMPLATE
) -> TaskConfig:
    """The paper's WMDP+SciQ task: answer with a letter A-D; forgetting answers a non-letter generic label.

    Labels in the data may be letters ("C") or choice indices (2).
    """
    return TaskConfig(
        kind=TaskKind.MULTIPLE_CHOICE,
        template=template,
        label_words=list(letters or MCQA_LETTERS),
        generic_labels=list(generic_labels or MCQA_GENERIC_LABELS),
    )
