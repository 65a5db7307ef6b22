"""Gradient checkpointing for a frozen trunk that runs in eval mode.

Transformers checkpoints a decoder layer only while ``layer.training`` is true. Soft-prompt methods keep the
frozen trunk in eval mode (no dropout), which would silently switch checkpointing off and keep every
activation. Marking just the checkpointed layer objects as training re-arms it: their children (attention,
dropout) stay in eval mode, so the computation is unchanged and only the memory/compute trade differs.
Layer classes whose own ``forward`` reads ``self.training`` (e.g. OPT's functional dropout) are left alone:
for them re-arming would change the computation, so checkpointing stays off there (with a warning).
"""

from __future__ import annotations

import functools
import inspect
import logging

import torch

log = logging.getLogger(__name__)


@functools.cache
def _reads_training_flag(cls: type) -> bool:
    forward = getattr(cls.forward, "__wrapped__", cls.forward)
    try:
        reads = "self.training" in inspect.getsource(forward)
    except (OSError, TypeError):
        reads = True
    if reads:
        log.warning("gradient checkpointing stays off for %s in eval mode (its forward uses dropout)", cls.__name__)
    return reads


def rearm_checkpointing(model: torch.nn.Module) -> int:
    """Re-enable checkpointing on layers that have it on but were put in eval mode; returns how many."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    count = 0
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing and not module.training:
            if _reads_training_flag(type(module)):
                continue
            module.training = True  # this module only; children keep eval-mode dropout
            count += 1
    return count


def checkpointing_enabled(model: torch.nn.Module) -> bool:
    """Whether any decoder layer has gradient checkpointing switched on (version-independent)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return any(isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing for m in model.modules())
