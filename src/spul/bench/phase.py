"""The SPUL phase of a run config, timed end to end: the real trainer against the naive loop, one process.

The per-step benchmark (``runner``) sees every batch once, so it cannot show what repeats across epochs
(the reference cache). This one trains the whole phase as ``spul unlearn`` would, on the config's data,
epochs and batch size, from the same model object:

- ``optimised``: ``SpulTrainer`` with the config's settings (the pipeline's trainer, checkpoints included);
- ``optimised_plain``: the same with ``shared_prompt_kv`` and ``reference_cache`` off, to show what they add;
- ``naive``: a plain loop of ``naive_spul_step`` (full logits at every position, a deep-copied reference model
  on the whole batch), random order, same batch size, epochs, optimiser, schedule and clipping.

Speed does not depend on the weights' values, so the phase starts from ``model.name_or_path`` unless a
familiarised model is given.
"""

from __future__ import annotations

import copy
import datetime
import enum
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from spul.bench.hardware import clock, device_name
from spul.bench.models import non_embedding_params
from spul.bench.naive import naive_spul_step
from spul.errors import ConfigError


class PhaseVariant(str, enum.Enum):
    OPTIMISED = "optimised"
    OPTIMISED_PLAIN = "optimised_plain"
    NAIVE = "naive"


@dataclass
class PhaseBenchConfig:
    variants: list[PhaseVariant] = field(default_factory=lambda: [PhaseVariant.OPTIMISED, PhaseVariant.NAIVE])
    base: str | None = None  # model to unlearn from; default: the config's model.name_or_path
    epochs: float | None = None  # override unlearn.num_epochs (quick checks)
    cpu_time: bool | None = None  # None: CPU time on one thread on CPU devices, wall time on GPUs

    def __post_init__(self) -> None:
        self.variants = [PhaseVariant(v) for v in self.variants]
        if not self.variants:
            raise ConfigError("no phase variants to run", "give e.g. --phase-variants optimised,naive")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"phase epochs={self.epochs} is not positive", "give a positive number of epochs")


def _optimised(ucfg, peft_model, examples, tokenizer, device) -> dict[str, Any]:
    from spul.methods.spul import SpulTrainer
    from spul.methods.training import AnswerCollator, AnswerDataset

    workdir = tempfile.mkdtemp(prefix="spul-phase-")
    trainer = SpulTrainer(model=peft_model, args=ucfg.training_arguments(workdir, device.type), train_dataset=AnswerDataset(examples),
                          data_collator=AnswerCollator(tokenizer.pad_token_id))
    result = trainer.train()
    return {"steps": trainer.state.global_step, "final_loss": round(float(result.training_loss), 5)}


def _naive(ucfg, peft_model, examples, tokenizer, device) -> dict[str, Any]:
    from transformers import get_scheduler

    from spul.methods.training import AnswerCollator, AnswerDataset
    from spul.models.forward import unwrap

    dataset = AnswerDataset(examples)
    collate = AnswerCollator(tokenizer.pad_token_id)
    reference = copy.deepcopy(unwrap(peft_model)).eval()
    unwrap(peft_model).eval()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ucfg.learning_rate, weight_decay=ucfg.weight_decay)
    per_epoch = math.ceil(len(dataset) / ucfg.batch_size)
    total = math.ceil(per_epoch * ucfg.num_epochs)
    scheduler = get_scheduler(ucfg.lr_scheduler, optimizer, num_warmup_steps=int(ucfg.warmup_ratio * total), num_training_steps=total)
    gen = torch.Generator().manual_seed(ucfg.seed)
    losses, step = [], 0
    while step < total:
        order = torch.randperm(len(dataset), generator=gen).tolist()
        for start in range(0, len(order), ucfg.batch_size):
            if step >= total:
                break
            batch = collate([dataset[i] for i in order[start:start + ucfg.batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            losses.append(naive_spul_step(peft_model, reference, batch, ucfg.alpha, ucfg.beta, optimizer, ucfg.max_grad_norm, scheduler))
            step += 1
    del reference
    return {"steps": step, "final_loss": round(sum(losses) / len(losses), 5)}


def matmul_ceiling(n_trunk: int, n_head: int, tokens: float, prompt: int, batch: int, retain_share: float,
                   epochs: float) -> dict[str, float]:
    """The best speed-up over the naive loop that matmul work allows (attention scores and element-wise ops ignored).

    Naive step: trunk + head on T + p positions forward and backward, then the reference (trunk + head) on T.
    Optimised step: the trunk forward and backward on T per row plus p once per batch; in the first epoch also
    the reference trunk on the retain rows (the reference cache serves later epochs).
    """
    naive = (n_trunk + n_head) * (2 * (tokens + prompt) + tokens)
    later = n_trunk * 2 * (tokens + prompt / batch)
    first = later + n_trunk * tokens * retain_share
    whole = (first + max(epochs - 1, 0) * later) / max(epochs, 1)
    return {"first_epoch": round(naive / first, 3), "later_epochs": round(naive / later, 3), "phase": round(naive / whole, 3)}


def run_phase_bench(run_cfg, cfg: PhaseBenchConfig, log=print) -> dict[str, Any]:
    """Time each variant's whole SPUL phase for ``run_cfg`` (a ``RunConfig``); JSON-able result."""
    threads = torch.get_num_threads()
    try:
        return _run(run_cfg, cfg, log)
    finally:
        torch.set_num_threads(threads)


def _run(run_cfg, cfg: PhaseBenchConfig, log) -> dict[str, Any]:
    from dataclasses import replace

    from spul.configuration import to_dict
    from spul.data.encoding import TaskEncoder
    from spul.data.sources import load_unlearning_data
    from spul.data.tasks import Task
    from spul.methods.training import build_examples
    from spul.models.loading import load_model, resolve_device
    from spul.models.soft_prompt import add_soft_prompt, count_trainable

    device = resolve_device(run_cfg.model.device)
    cpu_time = cfg.cpu_time if cfg.cpu_time is not None else device.type == "cpu"
    if cpu_time:
        if device.type != "cpu":
            raise ConfigError("CPU-time timing only makes sense on a CPU device", "use --clock wall on GPUs")
        torch.set_num_threads(1)  # CPU time of one thread = its uncontended wall time
    ucfg = run_cfg.unlearn if cfg.epochs is None else replace(run_cfg.unlearn, num_epochs=cfg.epochs)
    ucfg = replace(ucfg, progress_bar=False)
    base = cfg.base or run_cfg.model.name_or_path
    model, tokenizer = load_model(replace(run_cfg.model, name_or_path=base))
    data = load_unlearning_data(run_cfg.data, Task(run_cfg.task))
    examples = build_examples(data, TaskEncoder(Task(run_cfg.task), tokenizer, run_cfg.model.max_length), forget_target="generic", seed=ucfg.seed)
    n_trunk = non_embedding_params(model)
    head = model.get_output_embeddings()
    n_head = head.weight.numel() if head is not None else 0
    tokens = sum(len(e.prompt_ids) + len(e.target_ids) - 1 for e in examples) / len(examples)
    retain_share = sum(not e.is_forget for e in examples) / len(examples)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": base, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "device": {"type": device.type, "name": device_name(device)},
        "timing": "process CPU time, 1 thread" if cpu_time else "wall time",
        "rows": len(examples), "tokens_per_row": round(tokens, 1), "retain_share": round(retain_share, 3),
        "non_embedding_params": n_trunk, "head_params": n_head,
        "matmul_ceiling": matmul_ceiling(n_trunk, n_head, tokens, ucfg.prompt_length, ucfg.batch_size, retain_share,
                                         ucfg.num_epochs),
        "unlearn": to_dict(ucfg),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "phases": [],
    }
    now = clock(cpu_time)
    for variant in cfg.variants:
        vcfg = ucfg if variant is not PhaseVariant.OPTIMISED_PLAIN else replace(ucfg, shared_prompt_kv=False, reference_cache=False)
        peft_model = add_soft_prompt(model, vcfg.prompt_encoder, vcfg.prompt_length, vcfg.prompt_init, tokenizer=tokenizer,
                                     init_text=vcfg.prompt_init_text, seed=vcfg.seed, encoder_hidden_size=vcfg.encoder_hidden_size)
        peft_model.to(device)
        log(f"phase: {variant.value} ...")
        torch.manual_seed(vcfg.seed)
        start, wall = now(), time.perf_counter()
        if variant is PhaseVariant.NAIVE:
            row = _naive(vcfg, peft_model, examples, tokenizer, device)
        else:
            row = _optimised(vcfg, peft_model, examples, tokenizer, device)
        row = {"variant": variant.value, "seconds": round(now() - start, 1), "wall_s": round(time.perf_counter() - wall, 1),
               "trainable_parameters": count_trainable(peft_model), **row}
        row["seconds_per_step"] = round(row["seconds"] / max(row["steps"], 1), 3)
        result["phases"].append(row)
        log(f"  {row['seconds']} s for {row['steps']} steps ({row['seconds_per_step']} s/step)")
        del peft_model
    by = {r["variant"]: r for r in result["phases"]}
    if "optimised" in by and "naive" in by:
        speedup = by["naive"]["seconds"] / by["optimised"]["seconds"]
        result["speedup_vs_naive"] = round(speedup, 3)
        result["target"] = {"target": "SPUL phase >= 3x faster than the naive implementation", "threshold": 3.0,
                            "measured": round(speedup, 3), "met": speedup >= 3.0}
    if "optimised" in by and "optimised_plain" in by:
        result["speedup_from_shortcuts"] = round(by["optimised_plain"]["seconds"] / by["optimised"]["seconds"], 3)
    return result
