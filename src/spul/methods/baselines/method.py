"""The paper's four fine-tuning baselines as registered methods (GA, RL, GA+KL, GA+GD)."""

from __future__ import annotations

from spul.methods.baselines.config import BaselineConfig, BaselineMethod
from spul.methods.baselines.trainer import baseline_examples, baseline_objective, load_weights, train_weights
from spul.methods.registry import TrainJob, register_method


def _trainer(name: str):
    objective = baseline_objective(name)

    def train(job: TrainJob):
        return train_weights(job, objective, baseline_examples, needs_reference=name == BaselineMethod.GA_KL.value)

    return train


for _m in BaselineMethod:
    register_method(_m.value, BaselineConfig, _trainer(_m.value), load_weights, lambda meta, d=_m.display: d,
                    f"baseline {_m.display} (weights change; LoRA or full tuning)", defaults={"method": _m.value})
