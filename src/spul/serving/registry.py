"""The artifacts a running server knows: loaded once, checked against the base model, swapped without restart.

The base model stays unwrapped. Loading an artifact runs its PEFT prompt encoder once to get the ``[p, d]``
vectors (plain prompt tuning or the P-tuning MLP alike), then drops the PEFT wrapper, so any number of
artifacts share one model and a request pays only for its own prompt.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import torch

from spul.artifacts import check_base, read_metadata
from spul.configuration import from_dict
from spul.data.tasks import TaskConfig
from spul.errors import ArtifactError, ConfigError
from spul.models.prefix_cache import PrefixCache
from spul.serving.policies import BASE_POLICY, BasePolicy, EcoPolicy, Policy, SoftPromptPolicy

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def artifact_vectors(model, folder: str | Path, fingerprint: str, model_name: str = "") -> tuple[torch.Tensor, dict[str, Any]]:
    """The artifact's soft prompt as ``[p, d]`` in the model dtype, after checking it belongs to ``model``."""
    from peft import PeftConfig, PeftModel

    meta = read_metadata(folder)
    check_base(meta, fingerprint, model_name or meta.get("base_model", ""))
    if meta.get("method", "spul") != "spul":
        raise ArtifactError(f"artifact {str(folder)!r} is a {meta.get('method')!r} artifact, not a soft prompt", "serve it with its own policy type")
    try:
        config = PeftConfig.from_pretrained(str(folder))
        if not getattr(config, "is_prompt_learning", False):
            raise ValueError(f"adapter type {config.peft_type} is not a soft prompt")
        dtype = model.get_input_embeddings().weight.dtype
        wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        with torch.no_grad():
            vectors = wrapped.get_prompt(batch_size=1)[0].detach().to(dtype).clone()
        # forget the wrapper: prompt learning does not touch the base model's modules
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if attr in model.__dict__:
                delattr(model, attr)
        del wrapped
    except Exception as err:  # noqa: BLE001 - any failure to read the adapter (incl. SafetensorError) refuses it
        raise ArtifactError(f"artifact {str(folder)!r} could not be loaded ({str(err).splitlines()[0][:150] if str(err) else type(err).__name__})",
                            "re-create it with spul unlearn") from None
    if vectors.ndim != 2 or vectors.shape[1] != model.get_input_embeddings().weight.shape[1]:
        raise ArtifactError(f"artifact {str(folder)!r} has prompt shape {tuple(vectors.shape)}", "re-create it with spul unlearn for this model")
    if not torch.isfinite(vectors).all():
        raise ArtifactError(f"artifact {str(folder)!r} contains NaN or infinite values", "re-train it (the training diverged)")
    return vectors, meta


def _task_of(meta: dict[str, Any], folder: str | Path, tokenizer=None, max_length: int = 256) -> TaskConfig | None:
    """The task the artifact was trained for (its template and labels), when recorded; with ``tokenizer``
    also checked to encode with it (label words it lacks would otherwise fail every request later)."""
    if not isinstance(meta.get("task"), dict):
        return None
    try:
        task = from_dict(TaskConfig, meta["task"])
    except Exception as err:  # noqa: BLE001 - any malformed task section refuses the artifact
        raise ArtifactError(f"artifact {str(folder)!r} has an invalid task section ({str(err)[:120]})", "re-create it") from None
    if tokenizer is not None:
        from spul.data.encoding import TaskEncoder
        from spul.data.tasks import Task
        from spul.errors import SpulError

        try:
            TaskEncoder(Task(task), tokenizer, max_length)
        except SpulError as err:
            raise ArtifactError(f"artifact {str(folder)!r}: its task does not work with this model's tokenizer ({err.problem[:150]})",
                                "re-create the artifact for this model, or fix its task.label_words") from None
    return task


class Registry:
    """Named policies over one frozen model; thread-safe add/remove while requests are served."""

    def __init__(self, model, tokenizer, model_name: str, fingerprint: str | None = None, prefix_cache: bool = True,
                 max_length: int = 256):
        from spul.models.loading import weights_fingerprint

        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.fingerprint = fingerprint or weights_fingerprint(model)
        self.prefix_cache = prefix_cache
        self.max_length = max_length
        self._lock = threading.Lock()
        self._policies: dict[str, Policy] = {BASE_POLICY: BasePolicy()}

    def get(self, name: str) -> Policy | None:
        with self._lock:
            return self._policies.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._policies)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._policies[n].describe() for n in sorted(self._policies)]

    def add(self, name: str, folder: str | Path, replace: bool = False) -> Policy:
        """Load the artifact in ``folder`` under ``name``; raises ``ArtifactError``/``ConfigError`` if refused."""
        if not NAME.match(name or "") or name == BASE_POLICY:
            raise ConfigError(f"artifact name {name!r} is not allowed", "use letters, digits, '.', '_' or '-' (not 'base')")
        with self._lock:
            if name in self._policies and not replace:
                raise ConfigError(f"an artifact named {name!r} is already loaded", "remove it first or choose another name")
        if read_metadata(folder).get("method") == "eco":
            policy = self._eco(name, folder)
            with self._lock:
                self._policies[name] = policy
            return policy
        task = _task_of(read_metadata(folder), folder, self.tokenizer, self.max_length)  # before the (slower) weights
        vectors, meta = artifact_vectors(self.model, folder, self.fingerprint, self.model_name)
        prefix = PrefixCache(self.model, vectors) if self.prefix_cache else None
        info = {"folder": str(folder), "created": meta.get("created"), "method": meta.get("method", "spul"),
                "task_kind": task.kind.value if task else None}
        policy = SoftPromptPolicy(name, vectors, prefix, task, info)
        with self._lock:
            self._policies[name] = policy
        log.info("loaded artifact %s from %s (p=%d)", name, folder, vectors.shape[0])
        return policy

    def _eco(self, name: str, folder: str | Path) -> Policy:
        """An ECO artifact (``spul.methods.eco``): classifier + embedding guard, base model checked."""
        from spul.methods.eco.runner import load_eco

        meta = read_metadata(folder)
        check_base(meta, self.fingerprint, self.model_name)
        try:
            classifier, guard, meta = load_eco(folder, None, self.tokenizer.pad_token_id, self.model_name)
        except ArtifactError:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed ECO artifact is refused, not fatal
            raise ArtifactError(f"ECO artifact {str(folder)!r} could not be loaded ({str(err).splitlines()[0][:150] if str(err) else type(err).__name__})",
                                "re-create it with spul eco") from None
        task = _task_of(meta, folder, self.tokenizer, self.max_length)
        info = {"folder": str(folder), "created": meta.get("created"), "method": "eco",
                "task_kind": task.kind.value if task else None, "corruption": meta.get("corruption", {}).get("name")}
        return EcoPolicy(name, classifier, guard, task, info)

    def add_policy(self, policy: Policy) -> None:
        """Register a ready-made policy (e.g. an ECO guard built by ``spul.methods.eco``)."""
        with self._lock:
            self._policies[policy.name] = policy

    def remove(self, name: str) -> bool:
        if name == BASE_POLICY:
            raise ConfigError("the base policy cannot be removed", "unbind keys from 'base' in the keys file instead")
        with self._lock:
            return self._policies.pop(name, None) is not None

    def load_startup(self, artifacts: dict[str, str]) -> list[str]:
        """Load ``name → folder`` at startup; a refused artifact is logged and skipped. Returns the errors."""
        errors = []
        for name, folder in artifacts.items():
            try:
                self.add(name, folder)
            except (ArtifactError, ConfigError) as err:
                log.error("artifact %s refused: %s", name, err)
                errors.append(f"{name}: {err}")
            except Exception as err:  # noqa: BLE001 - one unreadable artifact must not stop the server starting
                log.error("artifact %s refused: %r", name, err)
                errors.append(f"{name}: artifact {str(folder)!r} could not be loaded ({type(err).__name__}) — fix: re-create it with spul unlearn")
        return errors
