"""``RunConfig``: one unlearning run's settings, importable without torch or transformers.

Only the config dataclasses load here, so ``spul run -c FILE key=value`` rejects a typo in well under a
second, before the pipeline's heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spul.data.config import DataConfig
from spul.data.tasks import TaskConfig
from spul.errors import ConfigError
from spul.evaluation.config import EvalConfig
from spul.methods.eco.config import EcoConfig
from spul.methods.finetune.config import FinetuneConfig
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
    unlearn: SpulConfig = field(default_factory=SpulConfig)
    eco: EcoConfig = field(default_factory=EcoConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if not str(self.output_dir).strip():
            raise ConfigError("output_dir is empty", "set output_dir to a folder for the run's files")

    @property
    def out(self) -> Path:
        return Path(self.output_dir)
