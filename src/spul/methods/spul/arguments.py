"""``SpulArguments``: the Trainer's arguments plus SPUL's loss weights (imports transformers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class SpulArguments(TrainingArguments):
    """``TrainingArguments`` plus SPUL's loss weights, so the trainer needs nothing else."""

    alpha: float = field(default=0.5, metadata={"help": "weight of the retain cross-entropy L_r"})
    beta: float = field(default=0.5, metadata={"help": "weight of the KL to the unprompted model on retain rows"})
    shared_prompt_kv: bool = field(default=True, metadata={"help": "run the soft prompt once per step, share its keys/values"})
    reference_cache: bool = field(default=True, metadata={"help": "keep each retain row's reference answer hidden states"})
