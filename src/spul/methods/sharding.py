"""Split the frozen model's weights over the processes, for models that do not fit one device.

Two routes, both running the loss inside ``LossModule.forward`` (``spul.methods.training``):

* **accelerate's FSDP** (``accelerate launch --config_file fsdp.yaml`` on GPUs): accelerate wraps the
  ``LossModule`` as configured in ``fsdp_config`` (version, wrap policy and layer class, resharding, state-dict
  type, offload, mixed precision); the root unit (embeddings, final norm, LM head and the soft prompt) is
  gathered by the root's forward, which is the loss, and each decoder layer by its own.
* **spul's own FSDP2 sharding** (``unlearn.shard_frozen_weights: true``, or an FSDP launch on CPUs, where
  accelerate declines FSDP and would fall back to plain data parallelism): ``fully_shard`` per decoder layer and
  once for the rest of the base model; the prompt stays whole on every process and DDP (around the
  ``LossModule``, frozen weights ignored) averages its gradient. The base model's root unit is gathered for each
  training step (``gathered``), because the losses call the embeddings and LM head outside its forward.
"""

from __future__ import annotations

import contextlib
import os

import torch

from spul.errors import ConfigError
from spul.methods.distributed import launched_processes, world_size
from spul.models.forward import decoder_of, unwrap


def launched_with_fsdp() -> bool:
    """``accelerate launch`` with a FSDP config sets this for every process."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1", "yes")


def accelerate_shards(device_type: str) -> bool:
    """An FSDP launch that accelerate itself carries out: on GPUs (accelerate declines FSDP on CPU processes)."""
    return launched_with_fsdp() and launched_processes() > 1 and device_type != "cpu"


def sharding_requested(shard_frozen_weights: bool, device_type: str = "cpu") -> bool:
    """spul's own sharding: asked for in the config, or an FSDP launch accelerate will not carry out (CPU)."""
    if launched_processes() <= 1 or accelerate_shards(device_type):
        return False
    return shard_frozen_weights or launched_with_fsdp()


def refuse_fsdp_launch(step: str) -> None:
    """Fine-tuning and the baselines train weights inside what would be the shards; they run data-parallel only."""
    if launched_with_fsdp() and launched_processes() > 1:
        raise ConfigError(f"{step} trains model weights and cannot run under a FSDP launch",
                          f"run {step} with the shipped ddp.yaml (data parallel: spul accelerate-config ddp); only spul unlearn shards the frozen weights")


def is_sharded(model) -> bool:
    """Any part of the model sharded (spul's own sharding, or accelerate's FSDP2 around the loss)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in unwrap(model).modules())


def _own_root(model):
    """The base model when spul's own sharding made it a FSDP unit (None otherwise)."""
    from torch.distributed.fsdp import FSDPModule

    base = unwrap(model)
    return base if isinstance(base, FSDPModule) else None


def shard_frozen_base(peft_model, device: torch.device) -> dict[str, int] | None:
    """Shard ``peft_model``'s base model over all processes onto ``device``; None (nothing done) on one process.

    Returns the number of processes, the frozen parameters, and how many of them this process holds.

    Call after ``torch.distributed`` is initialised (reading ``TrainingArguments.device`` does that) and before
    the ``Trainer`` is built.
    """
    if world_size() <= 1:
        return None
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    base = unwrap(peft_model)
    if any(p.requires_grad for p in base.parameters()):
        raise ConfigError("sharded training needs a frozen base model, but it has trainable weights (LoRA?)",
                          "shard only soft-prompt training (spul unlearn); train LoRA methods with data parallelism (spul accelerate-config ddp)")
    layers = getattr(decoder_of(peft_model), "layers", None)
    if layers is None:
        raise ConfigError(f"cannot find the decoder layers of {type(base).__name__} to shard",
                          "use a decoder with a .layers list (Llama, Mistral, Qwen, Gemma, OPT) or train without sharding")
    mesh = init_device_mesh(device.type, (world_size(),))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(base, mesh=mesh)
    # the Trainer still wraps the LossModule in DDP (it averages the prompt's gradient); LossModule tells DDP
    # to leave the sharded frozen weights alone
    os.environ["ACCELERATE_USE_FSDP"] = "false"  # accelerate must not wrap the model a second time
    return {"processes": world_size(), "frozen_parameters": sum(p.numel() for p in base.parameters()),
            "frozen_parameters_here": sum(_local_numel(p) for p in base.parameters())}


def _local_numel(p: torch.Tensor) -> int:
    return p.to_local().numel() if hasattr(p, "to_local") else p.numel()


@contextlib.contextmanager
def gathered(model):
    """Hold the base model's non-layer weights whole for a training step (forward and backward).

    The decoder layers gather themselves; the embeddings and LM head are called directly by the losses,
    outside any FSDP forward, so they are gathered here. No-op unless spul's own sharding made the base a unit
    (under accelerate's FSDP the loss is the root unit's forward, which gathers by itself).
    """
    root = _own_root(model)
    if root is None:
        yield
        return
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


def engine_name(wrapped) -> str:
    """What the trainer's model ran under: DistributedDataParallel, FSDP (a FSDP2 unit), DeepSpeedEngine, or LossModule."""
    from torch.distributed.fsdp import FSDPModule

    return "FSDP" if isinstance(wrapped, FSDPModule) else type(wrapped).__name__


@contextlib.contextmanager
def full_weights(wrapped):
    """Every parameter of an engine-wrapped model whole for a moment (to save a sharded prompt); collective."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(wrapped, FSDPModule):
        wrapped.unshard()
        try:
            yield
        finally:
            wrapped.reshard()
        return
    if type(wrapped).__name__ == "DeepSpeedEngine" and getattr(wrapped, "zero_optimization_stage", lambda: 0)() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(wrapped.module.parameters()), modifier_rank=None):
            yield
        return
    yield
