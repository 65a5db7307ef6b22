"""The artifacts a running server knows: loaded once, checked against the base model, swapped without restart.

The base model stays unwrapped. An artifact of any registered method loads as an intervention
(``spul.methods.registry.load_intervention``): a soft prompt is read once as ``[p, d]`` vectors (its keys/values
cached), ECO as a classifier-gated corruption hook, a baseline as a LoRA delta or a weight swap applied per batch,
so any number of artifacts share one model and a request pays only for its own.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from spul.data.encoding import TaskEncoder
from spul.data.tasks import Task
from spul.errors import ArtifactError, ConfigError, SpulError
from spul.interventions import Gated, Intervention
from spul.methods.registry import load_intervention
from spul.models.prefix_cache import PrefixCache
from spul.serving.policies import BASE_POLICY, BasePolicy, Policy

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def artifact_vectors(model, folder: str | Path, fingerprint: str, model_name: str = "") -> tuple[Any, dict[str, Any]]:
    """The artifact's soft prompt as ``[p, d]`` in the model dtype, after checking it belongs to ``model``
    (what the vLLM export needs); refuses an artifact whose intervention is not a plain soft prompt."""
    from spul.artifacts import read_metadata

    intervention = load_intervention(folder, model, fingerprint=fingerprint, model_name=model_name)
    if intervention.kind == "spul_deep":
        raise ArtifactError(f"artifact {str(folder)!r} is a deep prompt (keys/values at every layer); vLLM's prompt embeddings reach only the input layer",
                            "serve it with spul serve (which applies deep prompts), or train a plain soft prompt (unlearn.prompt_encoder: prompt_tuning) for vLLM")
    if intervention.vectors is None or intervention.changes_weights or isinstance(intervention, Gated):
        raise ArtifactError(f"artifact {str(folder)!r} is a {intervention.kind!r} intervention, not a plain soft prompt",
                            "only soft prompts travel as prompt embeddings; serve the others with spul serve")
    return intervention.vectors, read_metadata(folder)


def _check_task(policy: Intervention, folder: str | Path, tokenizer, max_length: int) -> None:
    """Refuse an artifact whose recorded task does not encode with this model's tokenizer (label words it lacks
    would otherwise fail every request later)."""
    if policy.task_config is None:
        return
    try:
        TaskEncoder(Task(policy.task_config), tokenizer, max_length)
    except SpulError as err:
        raise ArtifactError(f"artifact {str(folder)!r}: its task does not work with this model's tokenizer ({err.problem[:150]})",
                            "re-create the artifact for this model, or fix its task.label_words") from None


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
        try:
            policy = load_intervention(folder, self.model, tokenizer=self.tokenizer, fingerprint=self.fingerprint,
                                       model_name=self.model_name, name=name)
        except (ArtifactError, ConfigError):
            raise
        except Exception as err:  # noqa: BLE001 - a malformed artifact is refused, not fatal
            raise ArtifactError(f"artifact {str(folder)!r} could not be loaded ({str(err).splitlines()[0][:150] if str(err) else type(err).__name__})",
                                "re-create it") from None
        _check_task(policy, folder, self.tokenizer, self.max_length)
        if policy.vectors is not None and self.prefix_cache:
            policy.prefix = PrefixCache(self.model, policy.vectors)
        with self._lock:
            self._policies[name] = policy
        log.info("loaded artifact %s from %s (%s)", name, folder, policy.kind)
        return policy

    def add_policy(self, policy: Intervention) -> None:
        """Register a ready-made intervention under its name."""
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
