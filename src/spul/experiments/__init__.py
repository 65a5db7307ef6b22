"""The paper's experimental protocol: grids of methods × settings × forget fractions, cached per cell."""

from spul.experiments.config import ExperimentConfig, MethodKind, MethodSpec, SelectionConfig
from spul.experiments.runner import ExperimentOutcome, ExperimentRunner, mark_selected, plan_cells, run_experiment

__all__ = ["ExperimentConfig", "ExperimentOutcome", "ExperimentRunner", "MethodKind", "MethodSpec", "SelectionConfig",
           "mark_selected", "plan_cells", "run_experiment"]
