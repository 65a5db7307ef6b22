"""What every answer-level trainer shares: the data set of (prompt, target) pairs, the collator, and a
``Trainer`` base that computes per-row answer NLLs from the trunk's hidden states.

Methods subclass ``AnswerTrainer`` and override ``batch_loss(model, inputs) -> (loss, outputs)`` only
(open-unlearning's ``compute_loss``, one level down); checkpoints, resume, schedules, mixed precision, progress
bars and multi-GPU come from ``transformers.Trainer``.

The losses call the trunk, the LM head and the prompt encoder directly, so they run inside ``LossModule.forward``:
the Trainer holds a ``LossModule`` around the PEFT model, and the engines (DDP, accelerate's FSDP, DeepSpeed)
wrap *that* module, so their gradient synchronisation and parameter gathering run as for any model's forward.
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
from spul.methods.checkpoints import SafeCheckpoints
from spul.methods.losses import IGNORE, answer_positions, per_row_mean, token_nll
from spul.methods.sharding import gathered, is_sharded
from spul.models.checkpointing import rearm_checkpointing
from spul.models.forward import hidden_states, lm_logits, pad_left, unwrap
from spul.models.prefix_cache import hidden_after_prefix, prefix_key_values


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
                "label": ex.label, "is_forget": ex.is_forget, "index": ex.index, "row_id": i}


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
            # which data-set row each batch row is (-1: unknown): the key of the trainer's reference cache
            "row_id": torch.tensor([r.get("row_id", -1) for r in rows], dtype=torch.long),
        }


class LossModule(torch.nn.Module):
    """``forward(**batch) -> loss``: the method's loss over ``model`` (the PEFT model) as one module's forward.

    DDP synchronises gradients, FSDP gathers the root unit's weights, DeepSpeed runs its hooks only when the
    wrapped module's ``forward`` runs; the trainer hands the engines this module, so a loss that calls the
    embeddings, decoder, LM head and prompt encoder directly is still one forward of the wrapped module.
    ``loss_fn(model, batch) -> (loss, outputs)`` holds the method's settings (the trainer's ``batch_loss``).
    Attributes it does not have are read from ``model`` (``get_input_embeddings``, ``disable_adapter``, ``config``),
    so code that expected the PEFT model keeps working.
    """

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.last_outputs: dict[str, Any] = {}
        if is_sharded(model):  # spul's own frozen-weight sharding: DDP must keep off the (already sharded) frozen weights
            frozen = [f"model.{n}" for n, p in model.named_parameters() if not p.requires_grad]
            frozen += [f"model.{n}" for n, _ in model.named_buffers()]
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, frozen)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        loss, self.last_outputs = self.loss_fn(self.model, batch)
        return loss

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("__") or name in ("model", "loss_fn", "_ddp_params_and_buffers_to_ignore"):
                raise
            if name == "is_quantized":  # what trains is the adapter/prompt inside: not a "purely quantized" model
                return False
            return getattr(self._modules["model"], name)


def loss_module_of(model) -> LossModule | None:
    """The ``LossModule`` inside an engine's wrapper (DDP/DeepSpeed ``.module``; FSDP2 keeps the object itself)."""
    for candidate in (model, getattr(model, "module", None)):
        if isinstance(candidate, LossModule):
            return candidate
    return None


class AnswerTrainer(SafeCheckpoints, Trainer):
    """Trainer whose losses live at the answer positions. Subclasses implement ``batch_loss``.

    ``model`` is the PEFT model (or a plain model); the Trainer's ``self.model`` is a ``LossModule`` around it,
    and ``self.peft_model`` the model itself.
    """

    # SPUL-style methods keep the frozen trunk deterministic (dropout off); fine-tuning wants LoRA dropout.
    frozen_trunk_in_eval_mode = True
    phase = "unlearn"  # the progress bar's and run.log's label

    def __init__(self, model=None, *args, **kwargs):
        if model is not None and loss_module_of(model) is None:
            model = LossModule(model, self.batch_loss)
        super().__init__(model, *args, **kwargs)
        from spul.methods.tracking import label_phase

        label_phase(self, self.phase)
        self._parts: dict[str, list[float]] = defaultdict(list)
        # data-set row -> the reference model's final hidden states at that row's answer positions [k, d]
        self._reference_hidden: dict[int, torch.Tensor] = {}
        # compute_loss returns a per-batch mean and ignores num_items_in_batch, so the Trainer must divide by the
        # accumulation steps itself (a PEFT forward's **kwargs would otherwise make it skip that division)
        self.model_accepts_loss_kwargs = False

    @property
    def peft_model(self):
        """The model the losses run on (the PEFT model), without the ``LossModule`` and any engine wrapper."""
        return loss_module_of(self.model).model

    def batch_loss(self, model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The method's loss on one batch, and any outputs worth returning; ``model`` is the PEFT model."""
        raise NotImplementedError(f"{type(self).__name__} must implement batch_loss(model, inputs)")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Run the (engine-wrapped) ``LossModule``; a bare PEFT model (the benchmark's direct calls) runs ``batch_loss``."""
        module = loss_module_of(model)
        if module is not None:
            loss = model(**inputs)
            outputs = module.last_outputs
        else:
            loss, outputs = self.batch_loss(model, inputs)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Under spul's own frozen-weight sharding, hold the directly called root weights (embeddings, LM head)
        whole for the step, forward and backward (methods/sharding.py); gradients are the engine's business."""
        with gathered(self.peft_model):
            return super().training_step(model, inputs, num_items_in_batch)

    def answer_nll(self, model, inputs: dict[str, torch.Tensor], prompt: torch.Tensor | None = None,
                   with_hidden: bool = False):
        """Per-row mean NLL ``[B]`` of ``labels``; also the answer logits and their rows if asked.

        ``prompt`` is ``[B, p, d]`` (run in front of every row) or ``[1, p, d]`` (run once; its keys/values are
        shared by all rows, see ``spul.models.prefix_cache``).
        """
        if self.frozen_trunk_in_eval_mode and model.training:
            unwrap(model).eval()  # Trainer calls model.train() every step; the frozen trunk stays in eval
            rearm_checkpointing(unwrap(model))  # eval mode would silently switch gradient checkpointing off
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if prompt is not None and prompt.shape[0] == 1 and ids.shape[0] > 1:
            hidden = hidden_after_prefix(model, prefix_key_values(model, prompt), ids, mask)
        else:
            hidden = hidden_states(model, ids, mask, prompt)
        h, targets, rows = answer_positions(hidden, inputs["labels"])
        logits = lm_logits(model, h)
        nll = per_row_mean(token_nll(logits, targets), rows, inputs["labels"].shape[0])
        return (nll, logits, rows) if with_hidden else nll

    def reference_answer_hidden(self, inputs: dict[str, torch.Tensor], rows: torch.Tensor, compute, cache: bool) -> torch.Tensor:
        """The reference model's final hidden states ``[N, d]`` at the answer positions of the batch rows ``rows``.

        ``compute(ids, mask)`` returns the reference's final hidden states for a (left-padded) sub-batch. The
        reference is frozen, so with ``cache`` each data-set row runs through it once per training instead of
        once per epoch; only ``k × d`` numbers per row are kept (the LM head re-applies to them), never
        vocabulary-sized rows.
        """
        ids, mask, labels = inputs["input_ids"][rows], inputs["attention_mask"][rows], inputs["labels"][rows]
        keys = inputs.get("row_id")
        keys = keys[rows].tolist() if keys is not None and cache else None
        if not keys or min(keys) < 0:
            with torch.no_grad():
                h, _, _ = answer_positions(compute(ids, mask), labels)
            return h
        store = self._reference_hidden
        missing = [i for i, key in enumerate(keys) if key not in store]
        if missing:
            pick = torch.tensor(missing, device=ids.device)
            with torch.no_grad():
                hidden = compute(ids[pick], mask[pick])
            tail = hidden[:, hidden.shape[1] - labels.shape[1]:, :]
            for j, i in enumerate(missing):
                store[keys[i]] = tail[j][labels[i] != IGNORE].detach().clone()
        return torch.cat([store[key] for key in keys], dim=0)

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

    def _get_train_sampler(self, train_dataset=None):
        from transformers.trainer_pt_utils import LengthGroupedSampler

        from spul.methods.sampling import EpochSeededLengthGroupedSampler

        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and sampler.generator is None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler, seed)
        return sampler

    def checkpoint_model(self, model=None):
        """The PEFT model a checkpoint is written from and loaded into (never an engine or ``LossModule`` wrapper)."""
        inner = loss_module_of(model).model if model is not None and loss_module_of(model) is not None else model
        return inner if inner is not None else self.peft_model
