"""``GenerationRunConfig``: one generative unlearning run (task kind ``qa`` or ``completion``), importable without torch.

A config whose ``task.kind`` is ``qa`` or ``completion`` (e.g. the bundled ``quickstart_generation``) is read into this class
instead of ``RunConfig``; ``spul run`` then runs ``spul.pipeline_generation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spul.data.generative_sources import GenerationDataConfig
from spul.data.tasks import GenerationTaskConfig, TaskKind
from spul.errors import ConfigError
from spul.methods.finetune.config import FinetuneConfig
from spul.methods.registry import method_config, method_of
from spul.methods.spul.config import SpulConfig
from spul.models.config import ModelConfig

# methods whose generative training is implemented (spul.methods.generation): every registered method
GENERATIVE_METHODS = ("spul", "eco", "ga", "ga_kl", "ga_gd", "rl", "npo", "simnpo", "idk_dpo", "rmu")


@dataclass
class GenerationEvaluation:
    """How the generative evaluation runs (greedy decoding; TOFU-style metrics per set)."""

    batch_size: int = field(default=16, metadata={"help": "rows per generation / scoring batch"})
    max_new_tokens: int = field(default=32, metadata={"help": "token limit of each generated answer"})
    sets: list[str] = field(default_factory=lambda: ["forget", "retain", "world_facts"],
                            metadata={"help": "qa sets to evaluate (forget is required; the rest count toward model utility); passage "
                                                          "(completion) data is scored on every MUSE set it has"})
    plot: bool = field(default=True, metadata={"help": "draw forget quality against model utility (report/fq_vs_utility.png)"})

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("evaluation.batch_size and evaluation.max_new_tokens must be at least 1", "use e.g. 16 and 32")
        if "forget" not in self.sets:
            raise ConfigError("evaluation.sets must include forget", "add forget to evaluation.sets")


@dataclass
class GenerationRunConfig:
    """Everything one generative run needs: familiarise on forget + retain, a retain-only reference, unlearn, evaluate."""

    output_dir: str = "runs/quickstart_generation"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: GenerationTaskConfig = field(default_factory=GenerationTaskConfig)
    data: GenerationDataConfig = field(default_factory=GenerationDataConfig)
    max_answer_length: int = field(default=48, metadata={"help": "answer tokens trained and scored (EOS included)"})
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, metadata={"help": "familiarisation (forget + retain) and retain-only fine-tunes"})
    retain_only: bool = field(default=True, metadata={"help": "train the retain-only reference model (forget quality needs it)"})
    general_retain: bool = field(default=True, metadata={
        "help": "train on the data's general set (general-knowledge QA, disjoint from the evaluated world_facts) as retain "
                "rows: in the fine-tunes with its answers, in unlearning with the familiarised model's own answers, so the "
                "method keeps answering what it should not forget (qa data that has a general set)"})
    unlearn: Any = field(default_factory=SpulConfig, metadata={"help": "unlearning method (unlearn.method) and its settings"})
    evaluation: GenerationEvaluation = field(default_factory=GenerationEvaluation)

    def __post_init__(self) -> None:
        if not str(self.output_dir).strip():
            raise ConfigError("output_dir is empty", "set output_dir to a folder for the run's files")
        if self.task.kind not in (TaskKind.QA, TaskKind.COMPLETION):
            raise ConfigError(f"task.kind={self.task.kind.value} is not a generative task", "use task.kind=qa or task.kind=completion")
        if isinstance(self.unlearn, dict):
            values = dict(self.unlearn)
            name = str(values.pop("method", None) or "spul")
            if name not in GENERATIVE_METHODS:  # refused before its config class (and maybe torch) loads
                raise ConfigError(f"unlearn.method={name} has no generative training yet", f"use one of: {', '.join(GENERATIVE_METHODS)}")
            self.unlearn = method_config(name, values)
        elif self.unlearn is None:
            self.unlearn = SpulConfig()
        if method_of(self.unlearn) not in GENERATIVE_METHODS:
            raise ConfigError(f"unlearn.method={method_of(self.unlearn)} has no generative training yet",
                              f"use one of: {', '.join(GENERATIVE_METHODS)}")
        if self.max_answer_length < 2 or self.model.max_length <= self.max_answer_length:
            raise ConfigError(f"max_answer_length={self.max_answer_length} must be at least 2 and below model.max_length={self.model.max_length}",
                              "lower max_answer_length or raise model.max_length")
        if self.finetune.enabled is False:
            raise ConfigError("finetune.enabled=false: a generative run needs the familiarised model (there is nothing to unlearn otherwise)",
                              "set finetune.enabled=true")

    @property
    def method(self) -> str:
        return method_of(self.unlearn)

    @property
    def out(self) -> Path:
        return Path(self.output_dir)


def is_generation_config(values: dict[str, Any]) -> bool:
    """Whether plain config values (YAML + overrides) describe a generative run (``task.kind`` qa / completion)."""
    task = values.get("task") if isinstance(values, dict) else None
    kind = task.get("kind") if isinstance(task, dict) else None
    return str(getattr(kind, "value", kind)) in ("qa", "completion")
