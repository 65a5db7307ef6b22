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
    QA = "qa"  # question -> free-text answer (see GenerationTaskConfig)
    COMPLETION = "completion"  # prefix -> continuation (see GenerationTaskConfig)

    @property
    def is_generative(self) -> bool:
        return self in (TaskKind.QA, TaskKind.COMPLETION)


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
        if self.kind.is_generative:
            raise ConfigError(
                f"task.kind={self.kind.value} is a generative task, which the label-scoring runner does not run yet",
                "use task.kind classification or multiple_choice here; generative tasks are built with "
                "spul.data.tasks.GenerationTaskConfig and spul.data.generation",
            )
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


# ---------------------------------------------------------------------------------------------------------
# Generative tasks: ``qa`` (question -> free-text answer) and ``completion`` (prefix -> continuation).
# The answer is any number of tokens; training puts the loss on every answer token and evaluation generates
# it. Where the tokenizer has a chat template (e.g. SmolLM2-Instruct) the question goes into a user turn and
# the answer is the assistant's reply; otherwise a plain text template is used.

QA_TEMPLATE = "### Question: {question}\n\n### Answer:"
COMPLETION_TEMPLATE = "{prefix}"
DEFAULT_REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information on that.",
    "I can't answer that.",
    "That is not something I know.",
)


@dataclass
class GenerationTaskConfig:
    """How a generative row becomes a prompt and a target.

    ``chat_template``: ``auto`` uses the tokenizer's chat template when it has one (qa only: a completion
    continues raw text), ``always`` requires one, ``never`` uses ``template``.
    """

    kind: TaskKind = TaskKind.QA
    template: str = ""
    chat_template: str = "auto"
    system_prompt: str | None = None
    # answers a forget prompt may be trained toward (SPUL's generic set for generation; IDK-style targets)
    refusals: list[str] = field(default_factory=lambda: list(DEFAULT_REFUSALS))
    question_column: str = "question"
    answer_column: str = "answer"
    prefix_column: str = "prompt"
    continuation_column: str = "gt"

    def __post_init__(self) -> None:
        self.kind = TaskKind(self.kind)
        if not self.kind.is_generative:
            raise ConfigError(
                f"GenerationTaskConfig.kind={self.kind.value} is not a generative task",
                "use kind qa or completion (TaskConfig covers classification and multiple_choice)",
            )
        slot = "{question}" if self.kind is TaskKind.QA else "{prefix}"
        if not self.template:
            self.template = QA_TEMPLATE if self.kind is TaskKind.QA else COMPLETION_TEMPLATE
        if self.template.count(slot) != 1:
            raise ConfigError(f"task.template must contain {slot!r} exactly once for a {self.kind.value} task",
                              f"put {slot!r} where the input goes, e.g. {QA_TEMPLATE!r}")
        if self.chat_template not in ("auto", "always", "never"):
            raise ConfigError(f"task.chat_template={self.chat_template!r} is not one of auto, always, never",
                              "use auto (the tokenizer's chat template when it has one), always or never")
        if self.kind is TaskKind.COMPLETION and self.chat_template == "always":
            raise ConfigError("task.chat_template=always does not apply to a completion task (it continues raw text)",
                              "use chat_template auto or never for completion")
        self.refusals = [str(r).strip() for r in self.refusals]
        if not self.refusals or any(not r for r in self.refusals):
            raise ConfigError("task.refusals is empty or contains an empty answer", "list refusals such as \"I don't know.\"")
        if len({r.lower() for r in self.refusals}) != len(self.refusals):
            raise ConfigError(f"task.refusals contains duplicates: {self.refusals}", "list each refusal once")

    @property
    def input_column(self) -> str:
        return self.question_column if self.kind is TaskKind.QA else self.prefix_column

    @property
    def target_column(self) -> str:
        return self.answer_column if self.kind is TaskKind.QA else self.continuation_column


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


class GenerationTask:
    """Renders generative prompts (text) and says how an answer follows them."""

    def __init__(self, config: GenerationTaskConfig | None = None):
        self.config = config or GenerationTaskConfig()

    @property
    def kind(self) -> TaskKind:
        return self.config.kind

    @property
    def refusals(self) -> list[str]:
        return self.config.refusals

    def uses_chat(self, tokenizer) -> bool:
        """Whether prompts go through ``tokenizer``'s chat template."""
        mode = self.config.chat_template
        if self.kind is TaskKind.COMPLETION or mode == "never":
            return False
        if mode == "always" and not has_chat_template(tokenizer):
            raise ConfigError("task.chat_template=always but the tokenizer has no chat template",
                              "use chat_template auto or never with this model")
        return has_chat_template(tokenizer)

    def prompt(self, value: str, tokenizer=None) -> str:
        """The prompt text up to (not including) the answer; the chat-rendered prompt when the model has a chat template."""
        slot = "question" if self.kind is TaskKind.QA else "prefix"
        if tokenizer is not None and self.uses_chat(tokenizer):
            messages = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
            messages.append({"role": "user", "content": str(value).strip()})
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.config.template.format(**{slot: str(value).strip() if self.kind is TaskKind.QA else str(value)})

    def answer_text(self, answer: str, tokenizer=None) -> str:
        """The answer as it follows the prompt: after a plain QA template one space, in a chat reply or a
        completion as is."""
        if self.kind is TaskKind.QA and not (tokenizer is not None and self.uses_chat(tokenizer)):
            return " " + str(answer).strip()
        return str(answer) if self.kind is TaskKind.COMPLETION else str(answer).strip()
