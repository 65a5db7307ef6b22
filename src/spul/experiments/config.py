"""One YAML file per experiment: the shared model/data/familiarisation, the methods, their grids and τ."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from spul.configuration import to_dict
from spul.data.sources import DataConfig
from spul.data.tasks import TaskConfig
from spul.errors import ConfigError
from spul.evaluation.evaluate import EvalConfig
from spul.methods.finetune.config import FinetuneConfig
from spul.methods.registry import method_config
from spul.models.loading import ModelConfig


class MethodKind(str, enum.Enum):
    """The method families the bundled experiment configs name in ``kind`` (any registered method name works too)."""

    SPUL = "spul"
    BASELINE = "baseline"  # one of the fine-tuning baselines, named by ``settings.method``
    ECO = "eco"


@dataclass
class MethodSpec:
    """A method and its grid: every combination of ``grid`` values (over ``settings``) is one cell."""

    name: str
    # a registered method (spul, eco, ga, rl, ga_kl, ga_gd, npo, simnpo, idk_dpo, rmu, ...), or ``baseline`` with
    # the baseline named by ``settings.method``
    kind: str = "spul"
    # fields of that method's config, e.g. {num_epochs: 1} (kind=ga) or {method: ga_gd, num_epochs: 1} (kind=baseline)
    settings: dict[str, Any] = field(default_factory=dict)
    # field -> list of values, e.g. {learning_rate: [1e-5, 1e-4]} or {alpha: [0.1, 0.5], beta: [0, 0.5]}
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = str(getattr(self.kind, "value", self.kind))
        if not str(self.name).strip():
            raise ConfigError("a method has an empty name", "give every entry of methods a name, e.g. name: GA+GD")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"methods[{self.name}].grid.{key} must be a non-empty list", f"write e.g. grid: {{{key}: [value1, value2]}}")
        for point in self.points():
            self.method_config(point)  # validates every cell's settings up front, before any training

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))] or [{}]

    @property
    def method(self) -> str:
        """The registered method this entry runs."""
        if self.kind == MethodKind.BASELINE.value:
            return str(self.settings.get("method") or "ga_gd")
        return self.kind

    def method_config(self, point: dict[str, Any]):
        return method_config(self.method, {**self.settings, **point}, prefix=f"methods[{self.name}].settings")


@dataclass
class SelectionConfig:
    """How the best cell of a method's grid is reported (the paper's learning-rate search).

    Rule: among the cells whose test-retain accuracy is within ``max_retain_drop`` percentage points of the
    base model's, the one with the lowest test-forget accuracy (ties: higher test-retain accuracy); when no
    cell qualifies, the one with the highest test-retain accuracy.
    """

    max_retain_drop: float = 5.0

    def __post_init__(self) -> None:
        if self.max_retain_drop < 0:
            raise ConfigError(f"selection.max_retain_drop={self.max_retain_drop} is negative", "use percentage points ≥ 0, e.g. 5")


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    output_dir: str = "runs/experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec(name="SPUL")])
    # τ: fraction of train_forget used for unlearning (subsampled, seeded by data.seed); evaluation uses all of it
    forget_fractions: list[float] = field(default_factory=lambda: [1.0])
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    # t-SNE picture of last-layer representations with and without the selected SPUL cell's prompt
    tsne: bool = False
    figures: bool = True

    def __post_init__(self) -> None:
        if not str(self.output_dir).strip():
            raise ConfigError("output_dir is empty", "set output_dir to a folder for the experiment's files")
        if not self.methods:
            raise ConfigError("the experiment lists no methods", "add at least one entry under methods:")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ConfigError(f"method names repeat: {names}", "give every method a distinct name")
        bad = [t for t in self.forget_fractions if not 0 < t <= 1]
        if bad or not self.forget_fractions:
            raise ConfigError(f"forget_fractions has invalid value {bad[:1]}", "use fractions in (0, 1], e.g. [0.25, 0.5, 1.0]")

    def run_config(self, output_dir: str):
        """The shared ``RunConfig`` (data preparation and familiarisation happen once per experiment)."""
        from spul.pipeline import RunConfig

        return RunConfig(output_dir=output_dir, model=self.model, task=self.task, data=self.data, finetune=self.finetune,
                         evaluation=self.evaluation)

    def as_dict(self) -> dict[str, Any]:
        return to_dict(self)
