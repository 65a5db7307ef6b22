"""Data parallelism for trainers whose losses call the model's parts directly (trunk, LM head, prompt encoder).

DDP hides the wrapped model's attributes and only synchronises gradients when its own ``forward`` runs, but
answer-level losses call ``hidden_states``/``get_prompt`` on the inner model. So the trainers run on the inner
module and average the gradients of the trainable parameters themselves: a soft prompt or LoRA adapter is
small, so one flat all-reduce per micro-batch costs next to nothing. DDP's reducer stays idle (its forward is
never called), and its construction still broadcasts rank 0's initial weights.
"""

from __future__ import annotations

import torch


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


def is_ddp(model) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def average_gradients(module: torch.nn.Module) -> None:
    """Replace each trainable parameter's gradient by its mean over all processes (no-op on one process).

    Idempotent on an already averaged part, so calling it after every accumulation micro-step is correct.
    """
    size = world_size()
    if size == 1:
        return
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:  # every rank must contribute the same shapes
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
        offset += n
