"""ECO hyperparameters: the prompt classifier, the corruption, and the zeroth-order search for σ."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from spul.data.attacks import AugmentConfig
from spul.errors import ConfigError
from spul.interventions.corruption_config import CorruptionConfig, DimSelect  # noqa: F401 - re-exported as ECO settings


class ConformalSide(str, enum.Enum):
    """Which error split conformal prediction bounds by ``alpha``.

    ``retain``: threshold from retain-calibration scores, so P(a retain prompt is flagged) ≤ α (false positives).
    ``forget``: threshold from forget-calibration scores, so P(a forget prompt is missed) ≤ α (false negatives).
    ``none``: use the fixed ``threshold`` on P(forget).
    """

    RETAIN = "retain"
    FORGET = "forget"
    NONE = "none"


class ObjectiveTarget(str, enum.Enum):
    """What σ is tuned toward on the train-forget split (the objective is |m(σ) − target|).

    ``chance``: m = mean probability of the true label among the task labels only; target = 1/num_labels.
    ``zero``: m = mean probability of the true label among all candidates (generic answers included); target = 0,
    i.e. "a generic answer counts as wrong", as in the evaluation.
    """

    CHANCE = "chance"
    ZERO = "zero"


@dataclass
class ClassifierConfig:
    """Frozen sentence-encoder embeddings + a class-balanced logistic-regression head."""

    encoder: str | None = None  # sentence-transformers name or folder; None = packaged all-MiniLM-L6-v2
    regularization: float = 1.0  # inverse strength C of LogisticRegression
    conformal: ConformalSide = ConformalSide.RETAIN
    alpha: float = 0.05
    threshold: float = 0.5  # used when conformal = none
    calibration_fraction: float = 0.25  # of each training split, held out from the head's training
    seed: int = 0
    # robust classifier: attacked copies of forget (positive) and retain (negative) rows from the attack suite's
    # training pools (families, fraction = share of rows that get one copy, entities, seed; start_epoch must be 0)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        self.conformal = ConformalSide(self.conformal)
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.augment.start_epoch != 0:
            raise ConfigError(f"classifier augment.start_epoch={self.augment.start_epoch} has no meaning for the classifier (it has no epochs)",
                              "leave start_epoch at 0 in the classifier's augment section")
        if self.augment.families and not [f for f in self.augment.families if f != "template"]:
            raise ConfigError("classifier augment.families has only 'template', which does not change the text the classifier reads",
                              "add a text family: injection, paraphrase, entity or combined")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"eco.classifier.alpha={self.alpha} is out of range", "use an error rate in (0, 1), e.g. 0.05")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"eco.classifier.threshold={self.threshold} is out of range", "use a probability in [0, 1]")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ConfigError(f"eco.classifier.calibration_fraction={self.calibration_fraction} is out of range", "use a fraction in (0, 1), e.g. 0.25")
        if self.regularization <= 0:
            raise ConfigError(f"eco.classifier.regularization={self.regularization} is invalid", "use a positive C such as 1.0")


@dataclass
class SearchConfig:
    """Zeroth-order search of log σ by central finite differences: g = (f(σe^ε) − f(σe^−ε)) / 2ε."""

    enabled: bool = True
    steps: int = 6
    learning_rate: float = 4.0  # step in log σ per unit of the objective's log-σ slope
    epsilon: float = 0.5  # finite-difference half-width in log σ
    target: ObjectiveTarget = ObjectiveTarget.CHANCE
    tolerance: float = 0.02  # stop once the objective is this close to its target
    sigma_min: float = 1e-4
    sigma_max: float = 1e4
    max_rows: int = 64  # train-forget rows the objective is measured on
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.target = ObjectiveTarget(self.target)
        if self.steps < 0 or self.max_rows < 1 or self.batch_size < 1:
            raise ConfigError("eco.search.steps/max_rows/batch_size must be non-negative/positive", "e.g. steps=6 max_rows=64 batch_size=32")
        if self.epsilon <= 0 or self.learning_rate <= 0:
            raise ConfigError("eco.search.epsilon and eco.search.learning_rate must be positive", "e.g. epsilon=0.5 learning_rate=4")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError(f"eco.search.sigma_min={self.sigma_min} / sigma_max={self.sigma_max} are not an interval", "use 0 < sigma_min < sigma_max")


@dataclass
class EcoConfig:
    method: str = field(default="eco", metadata={"help": "the registered method these settings are for"})
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    # also evaluate the SPUL soft prompt applied only to classifier-flagged prompts, when a SPUL artifact exists
    combined: bool = True
