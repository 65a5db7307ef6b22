"""Which process this is, read from the launcher's environment (torchrun, accelerate launch, srun + torchrun).

Gradient synchronisation is the engines' own: the trainers hand DDP / FSDP / DeepSpeed a module whose
``forward`` computes the loss (``spul.methods.training.LossModule``), so nothing here reduces gradients.
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
