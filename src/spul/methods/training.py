"""What every answer-level trainer shares: the data set of (prompt, target) pairs, the collator, and a
``Trainer`` base that computes per-row answer NLLs from the trunk's hidden states.

Methods subclass ``AnswerTrainer`` and override ``compute_loss`` only (open-unlearning style); checkpoints,
resume, schedules, mixed precision, progress bars and multi-GPU come from ``transformers.Trainer``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer

from spul.data.encoding import EncodedExample, TaskEncoder
from spul.data.splits import Split, UnlearningData
from spul.errors import TrainingError
from spul.methods.losses import IGNORE, answer_positions, per_row_mean, token_nll
from spul.models.forward import hidden_states, lm_logits, pad_left, unwrap


from spul.models.checkpointing import rearm_checkpointing
class AnswerDataset(Dataset):
    """Rows with a prompt and the answer the model should learn (or unlearn)."""

    def __init__(self, examples: list[EncodedExample]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        # input_ids is what LengthGroupedSampler measures for length bucketing
        return {"input_ids": ex.prompt_ids + ex.target_ids[:-1], "prompt_len": len(ex.prompt_ids), "target_ids": ex.target_ids,
                "label": ex.label, "is_forget": ex.is_forget, "index": ex.index}


def generic_choices(n: int, num_generic: int, seed: int) -> np.ndarray:
    """Which generic label each forget row is trained toward: uniform, seeded, fixed for the whole run."""
    return np.random.default_rng(seed).integers(0, num_generic, size=n)


def build_examples(data: UnlearningData, encoder: TaskEncoder, *, forget_target: str = "generic", seed: int = 0,
                   include_forget: bool = True, include_retain: bool = True) -> list[EncodedExample]:
    """Encode the training splits. ``forget_target``: ``generic`` (SPUL, RL), ``true`` (fine-tune, GA)."""
    examples: list[EncodedExample] = []
    for split, wanted in ((Split.TRAIN_FORGET, include_forget), (Split.TRAIN_RETAIN, include_retain)):
        if not wanted:
            continue
        df = data[split]
        prompts = encoder.encode_prompts(df["text"].tolist())
        labels = df["label"].astype(int).tolist()
        if split.is_forget and forget_target == "generic":
            picks = generic_choices(len(df), len(encoder.generic_ids), seed)
            targets = [encoder.generic_ids[int(g)] for g in picks]
        else:
            targets = [encoder.label_ids[l] for l in labels]
        for i, (p, t, l) in enumerate(zip(prompts, targets, labels)):
            examples.append(EncodedExample(prompt_ids=p, target_ids=t, label=l, is_forget=split.is_forget, index=i))
    return examples


class AnswerCollator:
    """Left-pads ``prompt + answer[:-1]`` and right-aligns answer targets in ``labels [B, K]``."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_left([r["input_ids"] for r in rows], self.pad_id)
        k = max(len(r["target_ids"]) for r in rows)
        labels = torch.full((len(rows), k), IGNORE, dtype=torch.long)
        for row, r in enumerate(rows):
            labels[row, k - len(r["target_ids"]):] = torch.tensor(r["target_ids"], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "is_forget": torch.tensor([r["is_forget"] for r in rows], dtype=torch.bool),
            "class_label": torch.tensor([r["label"] for r in rows], dtype=torch.long),
        }


class AnswerTrainer(Trainer):
    """Trainer whose losses live at the answer positions. Subclasses implement ``compute_loss``."""

    # SPUL-style methods keep the frozen trunk deterministic (dropout off); fine-tuning wants LoRA dropout.
    frozen_trunk_in_eval_mode = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._parts: dict[str, list[float]] = defaultdict(list)

    def answer_nll(self, model, inputs: dict[str, torch.Tensor], prompt: torch.Tensor | None = None,
                   with_hidden: bool = False):
        """Per-row mean NLL ``[B]`` of ``labels``; also the answer logits and their rows if asked."""
        if self.frozen_trunk_in_eval_mode and model.training:
            unwrap(model).eval()  # Trainer calls model.train() every step; the frozen trunk stays in eval
        hidden = hidden_states(model, inputs["input_ids"], inputs["attention_mask"], prompt)
        h, targets, rows = answer_positions(hidden, inputs["labels"])
        logits = lm_logits(model, h)
            rearm_checkpointing(unwrap(model))  # eval mode would silently switch gradient checkpointing off
        nll = per_row_mean(token_nll(logits, targets), rows, inputs["labels"].shape[0])
        return (nll, logits, rows) if with_hidden else nll

    def record(self, **parts: torch.Tensor | float) -> None:
        """Keep loss components for the next log line, and stop on a non-finite loss."""
        for name, value in parts.items():
            v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            if name == "total" and not math.isfinite(v):
                raise TrainingError(
                    f"loss became {v} at step {self.state.global_step}",
                    "lower the learning rate, use float32 (model.dtype=float32), or lower max_grad_norm; resume from the last checkpoint",
                )
            self._parts[name].append(v)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._parts and "loss" in logs:
            for name, values in self._parts.items():
                if name != "total":
                    logs[f"loss_{name}"] = round(sum(values) / len(values), 4)
            self._parts.clear()
        super().log(logs, *args, **kwargs)
