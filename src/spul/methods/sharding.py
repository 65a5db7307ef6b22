"""Split the frozen model's weights over the processes (FSDP2), for models that do not fit one device.

SPUL trains only the soft prompt, and PEFT keeps it outside the base model (the prompt encoder). So the
base model is sharded with ``torch.distributed.fsdp.fully_shard`` (one unit per decoder layer, one for the
rest: embeddings, final norm, LM head), and the prompt stays whole on every process. Its gradient is
averaged by ``spul.methods.distributed.average_gradients``, as under plain data parallelism.

Why not accelerate's FSDP: it gathers the root unit's weights only when the root module's ``forward`` runs,
but SPUL's losses call the embeddings, the decoder and the LM head directly. Here every decoder layer
gathers its own weights in its own forward and backward (FSDP2 hooks), and the rest is gathered once per
training step (``gathered``); for a 70B Llama that rest is the 128k×8k embedding and LM head, ~4 GB in bf16.
Accelerate also declines FSDP on CPU, where the tests run. A launch with accelerate's FSDP config
(``ACCELERATE_USE_FSDP=true``) is taken as a request for this sharding, and accelerate's own is switched off.
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


def sharding_requested(shard_frozen_weights: bool) -> bool:
    """Asked for in the config or by the launch, and there is more than one process to shard over."""
    return (shard_frozen_weights or launched_with_fsdp()) and launched_processes() > 1


def refuse_fsdp_launch(step: str) -> None:
    """Fine-tuning and the baselines train weights inside what would be the shards; they run data-parallel only."""
    if launched_with_fsdp() and launched_processes() > 1:
        raise ConfigError(f"{step} trains model weights and cannot run under a FSDP launch",
                          f"run {step} with configs/accelerate/ddp.yaml (data parallel); only spul unlearn shards the frozen weights")


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)


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
    from torch.nn.parallel import DistributedDataParallel

    base = unwrap(peft_model)
    if any(p.requires_grad for p in base.parameters()):
        raise ConfigError("sharded training needs a frozen base model, but it has trainable weights (LoRA?)",
                          "shard only soft-prompt training (spul unlearn); train LoRA methods with data parallelism (configs/accelerate/ddp.yaml)")
    layers = getattr(decoder_of(peft_model), "layers", None)
    if layers is None:
        raise ConfigError(f"cannot find the decoder layers of {type(base).__name__} to shard",
                          "use a decoder with a .layers list (Llama, Mistral, Qwen, Gemma, OPT) or train without sharding")
    mesh = init_device_mesh(device.type, (world_size(),))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(base, mesh=mesh)
    # the Trainer still wraps the model in DDP (it broadcasts the prompt's initial value); keep DDP off the shards
    whole = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    frozen = [name for name, _ in peft_model.named_parameters() if name not in whole]
    frozen += [name for name, _ in peft_model.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(peft_model, frozen)
    os.environ["ACCELERATE_USE_FSDP"] = "false"  # accelerate must not wrap the model a second time
    return {"processes": world_size(), "frozen_parameters": sum(p.numel() for p in base.parameters()),
            "frozen_parameters_here": sum(_local_numel(p) for p in base.parameters())}


def _local_numel(p: torch.Tensor) -> int:
    return p.to_local().numel() if hasattr(p, "to_local") else p.numel()


@contextlib.contextmanager
def gathered(model):
    """Hold the base model's non-layer weights whole for a training step (forward and backward).

    The decoder layers gather themselves; the embeddings and LM head are called directly by the losses,
    outside any FSDP forward, so they are gathered here. No-op for an unsharded model.
    """
    if not is_sharded(model):
        yield
        return
    root = unwrap(model)
    root.unshard()
    try:
        yield
    finally:
        root.reshard()
