"""``RunConfig``: one unlearning run's settings, importable without torch or transformers.

Only the config dataclasses load here, so ``spul run -c FILE key=value`` rejects a typo in well under a
second, before the pipeline's heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spul.data.config import DataConfig
from spul.data.tasks import TaskConfig
from spul.errors import ConfigError
from spul.evaluation.config import EvalConfig
from spul.methods.eco.config import EcoConfig
from spul.methods.finetune.config import FinetuneConfig
from spul.methods.registry import method_config, method_of
from spul.methods.spul.config import SpulConfig
from spul.models.config import ModelConfig


@dataclass
class RunConfig:
    """Everything one unlearning run needs; every field can come from YAML or ``key=value`` overrides."""

    output_dir: str = "runs/quickstart"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # the unlearning method and its settings: ``method`` (spul, eco, ga, rl, ga_kl, ga_gd, npo, simnpo, idk_dpo,
    # rmu, or any registered method) picks the config class of the rest of the section
    unlearn: Any = field(default_factory=SpulConfig, metadata={"help": "unlearning method (unlearn.method) and its settings"})
    eco: EcoConfig = field(default_factory=EcoConfig, metadata={"help": "settings of the ECO comparison run by spul eco"})
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if not str(self.output_dir).strip():
            raise ConfigError("output_dir is empty", "set output_dir to a folder for the run's files")
        if isinstance(self.unlearn, dict):
            values = dict(self.unlearn)
            self.unlearn = method_config(str(values.pop("method", None) or "spul"), values)
        elif self.unlearn is None:
            self.unlearn = SpulConfig()
        method_of(self.unlearn)  # a config object that no registered method owns is refused here

    @property
    def method(self) -> str:
        return method_of(self.unlearn)

    @property
    def out(self) -> Path:
        return Path(self.output_dir)
