"""``DeepPrompt``: per-layer prefix keys/values (PEFT prefix tuning) attended to by every row of every forward."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from spul.interventions.base import Intervention, RowHook
from spul.models.deep_prompt import deep_prefix_applied
from spul.models.prefix_cache import KeyValues


class DeepLayers:
    """A deep prompt's per-layer keys/values in the shape serving reads a soft prompt's ``PrefixCache`` in
    (``layers``, ``length``): the serving path hands them to the decoder as the cache in front of the request."""

    def __init__(self, layers: KeyValues):
        self.layers = layers
        self.length = int(layers[0][0].shape[-2])


class DeepPrompt(Intervention):
    """A deep soft prompt (SPUL with ``prompt_encoder: prefix_tuning``). While applied, a pre-hook on the decoder
    puts ``layers`` in front of every forward that starts without a cache (evaluation, the audit). Serving reads
    ``prefix`` (the same keys/values) and passes it as the cache itself, for scoring and for ``generate``. It has
    no input-embedding ``vectors``, so the vLLM export (prompt embeddings only) refuses it."""

    kind = "spul_deep"

    def __init__(self, name: str, layers: KeyValues, **kwargs: Any):
        super().__init__(name, **kwargs)
        self.layers = layers
        self.prefix = DeepLayers(layers)

    @contextlib.contextmanager
    def applied(self, model, texts: list[str], prompts: list[list[int]]) -> Iterator[RowHook | None]:
        # the hook records which rows of the next forwards get the prefix: a ``Gated`` deep prompt passes its
        # flags as ``active``; called without them (or never called) every row gets it
        state: dict[str, np.ndarray | None] = {"on": None}

        def hook(rows, active=None):
            state["on"] = None if active is None else np.asarray(active, dtype=bool)
            return state["on"]

        with deep_prefix_applied(model, self.layers, lambda: state["on"]):
            yield hook

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prompt_length": int(self.layers[0][0].shape[-2]), "layers": len(self.layers)}
