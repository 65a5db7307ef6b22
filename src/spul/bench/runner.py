"""One benchmark run: training steps of several variants and serving latency, side by side in one process.

Training variants (one optimiser step of the SPUL loss on the same batches):
- ``optimised``: the real ``SpulTrainer.training_step`` (logits at answer positions only, KL reference = the
  same frozen model without the prompt, retain rows only, autocast as the Trainer sets it up).
- ``naive``: what a straightforward implementation does: ``model(inputs_embeds=...).logits`` over every
  position and a deep-copied reference model for the KL. It exists here only, as the baseline to beat.
- ``optimised_ckpt``: ``optimised`` with gradient checkpointing (less memory, ~one more forward).

Inference variants (next-token logits of the last position for a batch of requests):
``base`` (no prompt), ``prompt`` (soft prompt re-run in every batch), ``prefix_cache`` (prompt keys/values
computed once, see ``spul.models.prefix_cache``).

FLOPs per training example ≈ 4·N·T: forward 2·N·T plus a backward that computes only input gradients
(2·N·T, no weight gradients); N = non-embedding parameters, T = prompt + real tokens.
"""

from __future__ import annotations

import copy
import datetime
import enum
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from spul.bench.hardware import (clock, device_name, measured_matmul_tflops, peak_memory_mb, reset_peak_memory, sync,
                                 table_peak_tflops)
from spul.bench.models import bench_model, non_embedding_params
from spul.bench.naive import naive_spul_step
from spul.errors import ConfigError
from spul.models.forward import pad_left, unwrap


class TrainVariant(str, enum.Enum):
    OPTIMISED = "optimised"
    OPTIMISED_CKPT = "optimised_ckpt"
    NAIVE = "naive"


class InferVariant(str, enum.Enum):
    BASE = "base"
    PROMPT = "prompt"
    PREFIX_CACHE = "prefix_cache"


@dataclass
class BenchConfig:
    """What to measure. Defaults suit a GPU; on CPU use a small model and few steps."""

    model: str = "random:tiny"
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str | None = None
    # real batches from a data source when the model has a tokenizer; "synthetic" = random ids of seq_len
    data: str = "generated:reviews"
    max_length: int = 128
    seq_len: int = 256
    # synthetic batches: shortest sequence (None: seq_len // 2); equal to seq_len for fixed-length rows
    min_seq_len: int | None = None
    batch_size: int = 8
    prompt_length: int = 30
    steps: int = 5
    warmup: int = 1
    train_variants: list[TrainVariant] = field(default_factory=lambda: [TrainVariant.OPTIMISED, TrainVariant.NAIVE])
    infer_variants: list[InferVariant] = field(default_factory=lambda: list(InferVariant))
    infer_batch_size: int = 32
    infer_reps: int = 5
    peak_tflops: float | None = None
    # time with this process's CPU time on one thread instead of wall time: on a CPU shared with other jobs,
    # wall time measures the neighbours; auto = CPU time on CPU devices, wall time on GPUs
    cpu_time: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.train_variants = [TrainVariant(v) for v in self.train_variants]
        self.infer_variants = [InferVariant(v) for v in self.infer_variants]
        for name in ("batch_size", "prompt_length", "steps", "infer_batch_size", "infer_reps", "seq_len", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bench {name}={getattr(self, name)} is invalid", f"set {name} to at least 1")
        if self.warmup < 0:
            raise ConfigError(f"bench warmup={self.warmup} is negative", "use 0 or more warmup steps")


# ---------------------------------------------------------------- batches

def _real_batches(cfg: BenchConfig, tokenizer, count: int, batch_size: int) -> tuple[list[dict], list[list[int]]]:
    """Training batches (SPUL collator) and serving prompts from a real data source, same as the pipeline."""
    import numpy as np

    from spul.data.encoding import TaskEncoder
    from spul.data.sources import DataConfig, load_unlearning_data
    from spul.data.tasks import Task
    from spul.methods.training import AnswerCollator, AnswerDataset, build_examples

    task = Task()
    data = load_unlearning_data(DataConfig(source=cfg.data), task)
    encoder = TaskEncoder(task, tokenizer, cfg.max_length)
    dataset = AnswerDataset(build_examples(data, encoder, forget_target="generic", seed=cfg.seed))
    collate = AnswerCollator(tokenizer.pad_token_id)
    order = np.random.default_rng(cfg.seed).permutation(len(dataset))
    batches = []
    for i in range(count):
        idx = [int(order[(i * batch_size + j) % len(order)]) for j in range(batch_size)]
        batches.append(collate([dataset[k] for k in idx]))
    prompts = [dataset[int(k)]["input_ids"][: dataset[int(k)]["prompt_len"]] for k in order[: cfg.infer_batch_size]]
    return batches, prompts


def _synthetic_batches(cfg: BenchConfig, vocab: int, count: int, batch_size: int) -> tuple[list[dict], list[list[int]]]:
    """Random ids, lengths in [min_seq_len (default seq_len/2), seq_len], one answer token, a third of the rows forget rows."""
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = []
    for _ in range(count):
        shortest = cfg.seq_len // 2 if cfg.min_seq_len is None else min(cfg.min_seq_len, cfg.seq_len)
        lengths = torch.randint(max(2, shortest), cfg.seq_len + 1, (batch_size,), generator=gen).tolist()
        seqs = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]
        ids, mask = pad_left(seqs, 0)
        labels = torch.randint(3, vocab, (batch_size, 1), generator=gen)
        is_forget = torch.arange(batch_size) % 3 == 0
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels, "is_forget": is_forget,
                        "class_label": torch.zeros(batch_size, dtype=torch.long)})
    prompts = [torch.randint(3, vocab, (cfg.seq_len,), generator=gen).tolist() for _ in range(cfg.infer_batch_size)]
    return batches, prompts


def _tokens_per_example(batch: dict, prompt_length: int, shared_prompt: bool = False) -> float:
    """Positions the trunk really runs per example: a prompt shared across the batch counts once per batch."""
    rows = batch["attention_mask"].shape[0]
    return float(batch["attention_mask"].sum()) / rows + (prompt_length / rows if shared_prompt else prompt_length)


# ---------------------------------------------------------------- training

def _train_variant(variant: TrainVariant, model, batches: list[dict], cfg: BenchConfig, device: torch.device,
                   n_params: int) -> dict[str, Any]:
    from spul.methods.spul import SpulConfig, SpulTrainer
    from spul.models.soft_prompt import PromptEncoder, add_soft_prompt

    peft_model = add_soft_prompt(model, PromptEncoder.PROMPT_TUNING, cfg.prompt_length, seed=cfg.seed)
    peft_model.to(device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scfg = SpulConfig(prompt_length=cfg.prompt_length, batch_size=cfg.batch_size, progress_bar=False,
                      gradient_checkpointing=variant is TrainVariant.OPTIMISED_CKPT,
                      precision="bf16" if unwrap(model).dtype == torch.bfloat16 else "fp32")
    reference = None
    step_fn = None
    workdir = tempfile.mkdtemp(prefix="spul-bench-")
    if variant is TrainVariant.NAIVE:
        reference = copy.deepcopy(unwrap(model))

        def step_fn(batch):
            return naive_spul_step(peft_model, reference, batch, scfg.alpha, scfg.beta, optimizer)
    else:
        args = scfg.training_arguments(workdir, device.type)
        trainer = SpulTrainer(model=peft_model, args=args, train_dataset=None)
        if scfg.gradient_checkpointing:
            peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.train()

        def step_fn(batch):
            # the body of Trainer.training_step, without the training loop's bookkeeping
            peft_model.train()
            with trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(peft_model, batch)
            trainer.accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss)

    moved = [{k: v.to(device) for k, v in b.items()} for b in batches]
    reset_peak_memory(device)
    for b in moved[: cfg.warmup]:
        step_fn(b)
    sync(device)
    times, losses = [], []
    now = clock(bool(cfg.cpu_time))
    for b in moved[cfg.warmup:]:
        start = now()
        losses.append(step_fn(b))
        sync(device)
        times.append(now() - start)
    shared = variant is not TrainVariant.NAIVE and trainer._share_prompt(peft_model)
    if scfg.gradient_checkpointing:
        peft_model.gradient_checkpointing_disable()
    examples = cfg.batch_size * len(times)
    tokens = statistics.mean(_tokens_per_example(b, cfg.prompt_length, shared) for b in batches[cfg.warmup:])
    result = {
        "variant": variant.value,
        "seconds_per_step": round(statistics.median(times), 4),
        "examples_per_s": round(examples / sum(times), 3),
        "tokens_per_example": round(tokens, 1),
        "achieved_tflops": round(examples / sum(times) * 4 * n_params * tokens / 1e12, 4),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "losses": [round(x, 4) for x in losses],
    }
    # prompt learning injects nothing into the base model: dropping the wrapper leaves it as it was
    del peft_model, reference, optimizer
    return result


# ---------------------------------------------------------------- inference

def _infer_runner(variant: InferVariant, model, ids: torch.Tensor, mask: torch.Tensor, cfg: BenchConfig, device: torch.device):
    """A closure computing one batch's last-position logits the variant's way, and the prefix build time."""
    from spul.models.forward import hidden_states, lm_logits
    from spul.models.prefix_cache import PrefixCache

    weight = unwrap(model).get_input_embeddings().weight
    soft = weight[torch.arange(100, 100 + cfg.prompt_length, device=device) % weight.shape[0]].detach().clone()
    if variant is InferVariant.PREFIX_CACHE:
        now = clock(bool(cfg.cpu_time))
        start = now()
        cache = PrefixCache(model, soft)
        sync(device)
        return (lambda: cache.last_logits(ids, mask)), now() - start
    prompt = soft.unsqueeze(0).expand(ids.shape[0], -1, -1) if variant is InferVariant.PROMPT else None

    def run():
        with torch.no_grad():
            return lm_logits(model, hidden_states(model, ids, mask, prompt)[:, -1, :].contiguous())

    return run, None


def _infer_variants(variants: list[InferVariant], model, prompt_ids: list[list[int]], pad_id: int, cfg: BenchConfig,
                    device: torch.device) -> list[dict[str, Any]]:
    """Time the variants in interleaved rounds (each round runs every variant once, back to back), so slow drift
    of a shared machine hits all variants alike; the overhead is the median of each round's ratio to ``base``."""
    ids, mask = pad_left(prompt_ids, pad_id, device)
    runners = {v: _infer_runner(v, model, ids, mask, cfg, device) for v in variants}
    reset_peak_memory(device)
    for run, _ in runners.values():
        run()
    sync(device)
    times: dict[InferVariant, list[float]] = {v: [] for v in variants}
    now = clock(bool(cfg.cpu_time))
    for _ in range(cfg.infer_reps):
        for v, (run, _) in runners.items():
            start = now()
            run()
            sync(device)
            times[v].append(now() - start)
    rows = []
    for v, (_, build_s) in runners.items():
        latency = statistics.median(times[v])
        row = {"variant": v.value, "batch_size": ids.shape[0], "tokens_per_request": round(float(mask.sum()) / ids.shape[0], 1),
               "latency_s": round(latency, 4), "requests_per_s": round(ids.shape[0] / latency, 2),
               "peak_memory_mb": round(peak_memory_mb(device), 1), "times_s": [round(t, 4) for t in times[v]]}
        if build_s is not None:
            row["cache_build_s"] = round(build_s, 4)
        if InferVariant.BASE in times:
            row["overhead_vs_base"] = round(statistics.median(t / b - 1 for t, b in zip(times[v], times[InferVariant.BASE])), 4)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the run

def _resolve(cfg: BenchConfig) -> tuple[torch.device, torch.dtype]:
    from spul.models.loading import DType, resolve_device

    device = resolve_device(cfg.device)
    return device, DType(cfg.dtype).resolve(device)


def _targets(result: dict, cfg: BenchConfig) -> list[dict[str, Any]]:
    """The project's speed targets, each with what this run measured (or why it could not)."""
    out = []
    by_train = {r["variant"]: r for r in result.get("training", [])}
    by_infer = {r["variant"]: r for r in result.get("inference", [])}
    gpu = result["device"]["type"] == "cuda"
    mfu = by_train.get("optimised", {}).get("mfu")
    big = cfg.model in ("random:llama-7b", "random:llama-8b") and result["dtype"] == "bfloat16"
    out.append({"target": "7B Llama, bf16, one H100: training MFU >= 0.50", "threshold": 0.5,
                "measured": mfu if (gpu and big) else None,
                "met": (mfu >= 0.5) if (gpu and big and mfu is not None) else None,
                "note": None if (gpu and big) else "needs `spul bench --model random:llama-7b --dtype bfloat16` on an H100"})
    if "base" in by_infer and "prefix_cache" in by_infer:
        over = by_infer["prefix_cache"]["overhead_vs_base"]
        out.append({"target": f"serving with the soft prompt <= 3% slower than base (batch {cfg.infer_batch_size})",
                    "threshold": 0.03, "measured": round(over, 4), "met": over <= 0.03})
    if "optimised" in by_train and "naive" in by_train:
        speedup = by_train["naive"]["seconds_per_step"] / by_train["optimised"]["seconds_per_step"]
        out.append({"target": "SPUL training step >= 3x faster than the naive implementation", "threshold": 3.0,
                    "measured": round(speedup, 3), "met": speedup >= 3.0})
    return out


def run_bench(cfg: BenchConfig, log=print) -> dict[str, Any]:
    """Run every requested variant on one model in this process and return a JSON-able result."""
    threads = torch.get_num_threads()
    try:
        return _run(cfg, log)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: BenchConfig, log) -> dict[str, Any]:
    device, dtype = _resolve(cfg)
    if cfg.cpu_time is None:
        cfg.cpu_time = device.type == "cpu"
    if cfg.cpu_time:
        if device.type != "cpu":
            raise ConfigError("cpu_time timing only makes sense on a CPU device", "leave --cpu-time off on GPUs")
        torch.set_num_threads(1)  # CPU time of one thread = its uncontended wall time
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    model, tokenizer = bench_model(cfg.model, device, dtype, cfg.attn_implementation)
    n_params = non_embedding_params(model)
    peak = cfg.peak_tflops or table_peak_tflops(device, dtype)
    peak_source = "given" if cfg.peak_tflops else ("data sheet" if peak else "measured matmul")
    if peak is None:
        peak = measured_matmul_tflops(device, dtype, cpu_time=bool(cfg.cpu_time))
    count = cfg.warmup + cfg.steps
    if tokenizer is not None and cfg.data != "synthetic":
        batches, prompts = _real_batches(cfg, tokenizer, count, cfg.batch_size)
        pad_id = tokenizer.pad_token_id
    else:
        batches, prompts = _synthetic_batches(cfg, unwrap(model).config.vocab_size, count, cfg.batch_size)
        pad_id = 0
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": cfg.model, "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": getattr(unwrap(model).config, "_attn_implementation", None),
        "device": {"type": device.type, "name": device_name(device), "peak_tflops": round(peak, 3), "peak_source": peak_source},
        "timing": "process CPU time, 1 thread" if cfg.cpu_time else "wall time",
        "non_embedding_params": n_params,
        "config": {k: (v.value if isinstance(v, enum.Enum) else [x.value for x in v] if isinstance(v, list) else v)
                   for k, v in vars(cfg).items()},
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "training": [], "inference": [],
    }
    for variant in cfg.train_variants:
        log(f"training: {variant.value} ...")
        row = _train_variant(variant, model, batches, cfg, device, n_params)
        row["mfu"] = round(row["achieved_tflops"] / peak, 4)
        result["training"].append(row)
        log(f"  {row['seconds_per_step']} s/step, {row['examples_per_s']} examples/s, MFU {row['mfu']:.1%}")
    if cfg.infer_variants:
        log("inference: " + ", ".join(v.value for v in cfg.infer_variants) + f" ({cfg.infer_reps} interleaved rounds) ...")
        result["inference"] = _infer_variants(cfg.infer_variants, model, prompts, pad_id, cfg, device)
        for row in result["inference"]:
            log(f"  {row['variant']}: {row['latency_s']} s/batch, {row['requests_per_s']} requests/s")
    result["targets"] = _targets(result, cfg)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result
