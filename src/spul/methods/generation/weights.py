"""Every weight-changing method of the registry on generative examples, saved as a servable LoRA artifact.

The methods' objectives are the registered ones (``methods/baselines``, ``npo``, ``simnpo``, ``idk_dpo``, ``rmu``):
they work on per-row answer NLLs over every answer token (``WeightTrainer.answer_nll``), so multi-token answers
need nothing new. What differs from classification is only the rows:

* GA, GA+KL, GA+GD, NPO, SimNPO, RMU: forget rows with their true answer (+ retain rows where the method uses them)
* RL: forget rows toward a refusal drawn from ``task.refusals``
* IDK-DPO: each row also carries a refusal for its question, the *preferred* answer (the true one is rejected)

The result is an artifact like the classification baselines': a PEFT LoRA adapter folder + ``spul.json``
(``method``, ``tuning: lora``, base model and its weights fingerprint), which ``load_intervention`` turns into a
``LoraDelta`` on the shared frozen model, so evaluation and ``spul serve`` apply it per batch.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spul.configuration import to_dict
from spul.data.encoding import EncodedExample
from spul.data.generation import GenerationEncoder, build_generation_examples
from spul.errors import ConfigError
from spul.models.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerativePlan:
    """How a weight method's training rows are built on generative data."""

    forget_target: str  # "true" (the real answer) or "refusal" (one of task.refusals)
    retain: bool | None  # whether retain rows train too; None: when the config's retain_weight > 0
    objective_module: str  # the module whose ``objective`` (or ``baseline_objective(name)``) is the loss
    pairs: bool = False  # IDK-DPO: each row carries a refusal as its preferred answer


BASELINES = "spul.methods.baselines.trainer"
PLANS: dict[str, GenerativePlan] = {
    "ga": GenerativePlan("true", False, BASELINES),
    "ga_kl": GenerativePlan("true", True, BASELINES),
    "ga_gd": GenerativePlan("true", True, BASELINES),
    "rl": GenerativePlan("refusal", False, BASELINES),
    "npo": GenerativePlan("true", None, "spul.methods.npo"),
    "simnpo": GenerativePlan("true", None, "spul.methods.simnpo"),
    "idk_dpo": GenerativePlan("true", None, "spul.methods.idk_dpo", pairs=True),
    "rmu": GenerativePlan("true", None, "spul.methods.rmu"),
}


def plan_of(name: str) -> GenerativePlan:
    if name not in PLANS:
        raise ConfigError(f"unlearn.method={name} has no generative weight training", f"use spul, eco or one of: {', '.join(PLANS)}")
    return PLANS[name]


def objective_of(name: str):
    """The registered objective of weight method ``name`` (per-row answer NLLs over every answer token)."""
    plan = plan_of(name)
    module = importlib.import_module(plan.objective_module)
    return module.baseline_objective(name) if plan.objective_module == BASELINES else module.objective


def generative_rows(name: str, data, encoder: GenerationEncoder, cfg) -> tuple[list[EncodedExample], list[list[int]] | None]:
    """The training rows of method ``name`` and, for IDK-DPO, each row's preferred answer ids (a refusal for its
    question, drawn with ``cfg.seed``)."""
    import numpy as np

    plan = plan_of(name)
    retain = (cfg.retain_weight > 0) if plan.retain is None else plan.retain
    rows = build_generation_examples(data, encoder, forget_target=plan.forget_target, seed=cfg.seed, include_retain=retain)
    if not plan.pairs:
        return rows, None
    questions = [str(q) for part, wanted in (("forget", True), ("retain", retain)) if wanted for q in data[part]["question"]]
    refusals = encoder.task.refusals
    picks = np.random.default_rng(cfg.seed + 1).integers(0, len(refusals), size=len(rows))
    return rows, [encoder.encode_answer(q, refusals[int(k)]) for q, k in zip(questions, picks)]


def train_weights_generative(model_cfg: ModelConfig, name: str, data, encoder_for, cfg, artifact_dir: str | Path,
                             inputs: dict[str, Any], meta: dict[str, Any], *, resume: bool = True,
                             model_and_tokenizer: tuple | None = None) -> Path:
    """Train weight method ``name`` (LoRA) on generative ``data`` and save it as an artifact in ``artifact_dir``.

    ``encoder_for(tokenizer) -> GenerationEncoder``; ``inputs`` decide the result (its resume key: an artifact of the
    same inputs is returned as it is); ``meta`` goes into ``spul.json``. A caller's ``model_and_tokenizer`` gets its
    own modules back afterwards (the LoRA layers are unloaded; its weights never change). The reference model
    (KL, NPO, IDK-DPO, RMU) is the same model with the adapter disabled.
    """
    from transformers import TrainingArguments

    from spul import resume as resume_keys
    from spul.artifacts import is_current_artifact, save_artifact
    from spul.methods.baselines.config import Tuning
    from spul.methods.baselines.trainer import WeightTrainer
    from spul.methods.training import AnswerCollator, AnswerDataset
    from spul.models.loading import load_model, resolve_device, weights_fingerprint
    from spul.models.lora import add_lora
    from spul.models.soft_prompt import count_trainable

    if cfg.tuning is not Tuning.LORA:
        raise ConfigError(f"unlearn.tuning={cfg.tuning.value} on generation is not supported", "use unlearn.tuning=lora")
    artifact_dir = Path(artifact_dir)
    if resume and is_current_artifact(artifact_dir, inputs):
        log.info("generative %s artifact is up to date: %s", name, artifact_dir)
        return artifact_dir
    model, tokenizer = model_and_tokenizer or load_model(model_cfg)
    fingerprint = weights_fingerprint(model)
    extra: dict[str, Any] = {}
    if name == "rmu" and cfg.layer < 0:
        cfg = dataclasses.replace(cfg, layer=int(model.config.num_hidden_layers) // 2)
    if name == "rmu":
        extra["rmu"] = {"layer": cfg.layer, "steering_coeff": cfg.steering_coeff}
    rows, preferred = generative_rows(name, data, encoder_for(tokenizer), cfg)
    if not rows:
        raise ConfigError(f"no training rows for {name} on generation", "check the data's forget and retain sets")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if preferred is not None:
        from spul.methods.idk_dpo import PairCollator, PairDataset

        dataset, collator = PairDataset(rows, preferred), PairCollator(pad)
    else:
        dataset, collator = AnswerDataset(rows), AnswerCollator(pad)
    peft_model = add_lora(model, cfg, cfg.section)
    device = resolve_device(model_cfg.device)
    kwargs = cfg.trainer_kwargs(str(artifact_dir.parent / f"{artifact_dir.name}.work" / "checkpoints"), device.type)
    kwargs["save_strategy"] = "no"  # one short run; the artifact's resume key makes a re-run free
    trainer = WeightTrainer(model=peft_model, args=TrainingArguments(**kwargs), train_dataset=dataset, data_collator=collator,
                            objective=objective_of(name), config=cfg)
    started = time.time()
    try:
        result = trainer.train()
        peft_model.eval()
        record = {
            "method": name,
            "tuning": Tuning.LORA.value,
            **meta,
            "base_fingerprint": fingerprint,
            "hyperparameters": to_dict(cfg),
            "trainable_parameters": count_trainable(peft_model),
            "training": {"seconds": round(time.time() - started, 1), "steps": trainer.state.global_step, "examples": len(rows),
                         "final_loss": round(float(result.training_loss), 5),
                         "complete": trainer.state.global_step >= trainer.state.max_steps},
            "resume_key": resume_keys.resume_key(inputs),
            **extra,
        }
        return save_artifact(peft_model, artifact_dir, record)
    finally:
        if model_and_tokenizer is not None:
            peft_model.unload()  # the caller's model gets its own modules back (its weights were never changed)
