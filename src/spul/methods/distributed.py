"""Which process this is, read from the launcher's environment (torchrun, accelerate launch, srun + torchrun).

Gradient synchronisation is the engines' own: the trainers hand DDP / FSDP / DeepSpeed a module whose
``forward`` computes the loss (``spul.methods.training.LossModule``), so nothing here reduces gradients.
Evaluation shards rows across the processes and gathers the scores with ``all_gather_objects``.
"""

from __future__ import annotations


def is_main_process() -> bool:
    """Rank 0, or not launched distributed. Read from the launcher's environment, so it works before
    ``torch.distributed`` is initialised (the Trainer initialises it)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def launched_processes() -> int:
    """How many processes the launcher started (torchrun and accelerate set WORLD_SIZE), before any init."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_distributed(timeout_minutes: int = 120) -> bool:
    """Join the launcher's process group when started by torchrun / accelerate launch (WORLD_SIZE > 1) and no
    one has joined it yet (the Trainer does for training; evaluation alone has no Trainer). NCCL with one GPU
    per process (``LOCAL_RANK``) when CUDA is there, gloo on CPU. True when this process is one of several."""
    if launched_processes() <= 1:
        return False
    import datetime
    import os

    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_world_size() > 1


def all_gather_objects(obj):
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` on one process."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """``obj`` of process ``src`` on every process (unchanged on one process)."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
