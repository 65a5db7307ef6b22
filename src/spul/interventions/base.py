"""What an unlearning artifact applies to a frozen model at inference: one small type, ``Intervention``.

Evaluation, the attack audit, serving and the vLLM export take an ``Intervention`` and never ask which method
made it. The kinds:

* ``Intervention()``              nothing (the base model as it is)
* ``SoftPrompt(vectors)``         ``[p, d]`` vectors prepended to the input embeddings (SPUL), with an optional
                                  key/value prefix cache for serving
* ``EmbeddingCorruption(guard)``  corrupt the prompt embeddings of the active rows (ECO's corruption)
* ``LoraDelta`` / ``WeightSwap``  a weight change (the fine-tuning baselines), applied by forward hooks or by
                                  swapping parameter tensors for the duration of a batch, so one frozen model
                                  serves many of them
* ``Gated(inner, classifier)``    ``inner`` on the rows a prompt classifier flags only (ECO = a gated
                                  corruption; "SPUL prompt only on flagged prompts" = a gated soft prompt)

Protocol. ``with iv.applied(model, texts, prompts) as hook:`` wraps the model work for one group of inputs
(``texts`` and their token ids ``prompts``). ``hook`` is ``None`` when every row is treated alike; otherwise the
caller calls ``hook(rows)`` before each forward with the indices (into ``texts``) of that forward's rows, and
gets back ``None`` (the soft prompt, if any, goes on every row) or a bool array (which rows get it).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Protocol

import numpy as np
import torch

# hook(rows, active=None) -> which of ``rows`` get the soft prompt (None: all of them)
RowHook = Callable[..., "np.ndarray | None"]


class Flagger(Protocol):
    """Anything that flags texts (``spul.methods.eco.classifier.PromptClassifier``)."""

    def flags(self, texts: list[str]) -> np.ndarray: ...


class Intervention:
    """The base model as it is; subclasses add what an artifact applies."""

    kind: str = "base"
    #: ``[p, d]`` soft prompt in the model dtype, or None
    vectors: torch.Tensor | None = None
    #: cached keys/values of ``vectors`` (``spul.models.prefix_cache.PrefixCache``), or None to recompute
    prefix: Any = None
    #: the model's weights differ while it is applied (relearning attacks then fine-tune ``trainable_parameters``)
    changes_weights: bool = False
    #: a row's result does not depend on which rows share its batch or which batches ran before (no noise
    #: stream): distributed evaluation may then split a group's batches across processes
    batch_invariant: bool = True

    def __init__(self, name: str = "base", *, task_config: Any = None, info: dict[str, Any] | None = None, identity: str = "base"):
        self.name = name
        self.task_config = task_config  # spul.data.tasks.TaskConfig the artifact was trained for, if known
        self.info = dict(info or {})
        self.identity = identity  # stable id of what is applied: part of evaluation cache keys

    def applied(self, model, texts: list[str], prompts: list[list[int]]) -> ContextManager[RowHook | None]:
        return contextlib.nullcontext(None)

    # the serving layer's historical name for ``applied``
    def guard(self, model, texts: list[str], prompts: list[list[int]]) -> ContextManager[RowHook | None]:
        return self.applied(model, texts, prompts)

    def flags(self, texts: list[str]) -> np.ndarray | None:
        """Which texts a classifier gate selects, or None when there is no gate."""
        return None

    def trainable_parameters(self, model=None) -> list[torch.Tensor]:
        """Tensors a relearning attack may fine-tune while the intervention is applied to ``model`` (the weight
        change itself); empty for inference-time interventions."""
        return []

    def describe(self) -> dict[str, Any]:
        p = 0 if self.vectors is None else int(self.vectors.shape[0])
        return {"name": self.name, "kind": self.kind, "prompt_length": p, "prefix_cached": self.prefix is not None, **self.info}


class SoftPrompt(Intervention):
    """``[p, d]`` vectors in front of every row's input embeddings (SPUL)."""

    kind = "spul"

    def __init__(self, name: str, vectors: torch.Tensor, *, prefix: Any = None, **kwargs):
        super().__init__(name, **kwargs)
        self.vectors = vectors
        self.prefix = prefix


class Gated(Intervention):
    """``inner`` applied only to the rows whose text ``classifier`` flags; other rows see the base model."""

    def __init__(self, name: str, inner: Intervention, classifier: Flagger, *, kind: str | None = None, **kwargs):
        super().__init__(name, **kwargs)
        self.inner = inner
        self.classifier = classifier
        self.kind = kind or f"gated_{inner.kind}"
        self.vectors = inner.vectors
        self.prefix = inner.prefix
        self.changes_weights = inner.changes_weights
        self.batch_invariant = inner.batch_invariant
        self._memo: tuple[int, np.ndarray] | None = None

    def flags(self, texts: list[str]) -> np.ndarray:
        key = hash(tuple(texts))
        if self._memo is None or self._memo[0] != key:  # evaluation asks twice per split (rates, then scoring)
            self._memo = (key, np.asarray(self.classifier.flags(texts), dtype=bool))
        return self._memo[1]

    @contextlib.contextmanager
    def applied(self, model, texts: list[str], prompts: list[list[int]]) -> Iterator[RowHook]:
        flags = self.flags(texts)
        with self.inner.applied(model, texts, prompts) as inner_hook:

            def hook(rows, active=None):
                rows = np.asarray(rows)
                on = flags[rows] if active is None else flags[rows] & np.asarray(active, dtype=bool)
                return on if inner_hook is None else inner_hook(rows, on)

            yield hook

    def trainable_parameters(self, model=None) -> list[torch.Tensor]:
        return self.inner.trainable_parameters(model)


def prompt_batch(vectors: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``[n, p, d]`` view of a ``[p, d]`` soft prompt (None stays None)."""
    return None if vectors is None else vectors.unsqueeze(0).expand(n, -1, -1)


def as_provider(intervention: Intervention | None, hook: RowHook | None):
    """The ``(batch size, rows) -> (prompt [B, p, d] | None, prompt_rows [B] | None)`` callback of
    ``spul.models.scoring.score_prompts`` for an applied intervention."""
    if intervention is None:
        return None
    vectors = intervention.vectors
    if vectors is None and hook is None:
        return None

    def provider(n: int, rows):
        mask = hook(np.asarray(rows)) if hook is not None else None
        if vectors is None:
            return None, None
        return prompt_batch(vectors, n), (None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool)))

    return provider
