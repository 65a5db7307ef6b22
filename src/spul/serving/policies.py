"""What the server applies to a request: an intervention, chosen by the caller's API key and never by the request.

The server's policies are ``spul.interventions.Intervention`` objects (``Policy`` is the serving name for that
type): ``base`` (nothing applied), a soft prompt (SPUL: p vectors prepended to the input embeddings, with their
keys/values cached once), ECO (a classifier-gated embedding corruption), a LoRA delta or weight swap (the
fine-tuning baselines), or any composition. The app enters ``policy.guard(model, texts, prompts)`` around a batch's
model work and never asks which method made the policy. Because the policy is looked up from the API key on the
server, request fields cannot remove the soft prompt, the guard or the weight change.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from spul.configuration import DuplicateKeyError, safe_load_unique
from spul.data.encoding import TaskEncoder
from spul.data.tasks import Task, TaskConfig, TaskKind, multiple_choice_task_config
from spul.errors import ConfigError
from spul.interventions import Gated, Intervention, SoftPrompt

BASE_POLICY = "base"

Policy = Intervention
SoftPromptPolicy = SoftPrompt
GatedPolicy = Gated


def BasePolicy(name: str = BASE_POLICY) -> Intervention:  # noqa: N802 - the historical class name
    """The base model as it is (no unlearning); only keys explicitly bound to ``base`` get it."""
    return Intervention(name)


class Encoders:
    """Task encoders per (policy, endpoint), built lazily: the artifact's own task when it has one."""

    def __init__(self, tokenizer, max_length: int, default_task: TaskConfig):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.default_task = default_task
        self._cache: dict[tuple[str, int, str], TaskEncoder] = {}

    def for_policy(self, policy: Policy, kind: TaskKind) -> TaskEncoder:
        key = (policy.name, id(policy), kind.value)
        if key not in self._cache:
            task = policy.task_config if policy.task_config is not None and policy.task_config.kind is kind else None
            if task is None:
                task = self.default_task if kind is TaskKind.CLASSIFICATION else multiple_choice_task_config()
            self._cache[key] = TaskEncoder(Task(task), self.tokenizer, self.max_length)
        return self._cache[key]


@dataclass
class KeyTable:
    """API key → policy name, plus the admin keys that may add and remove artifacts.

    File format (YAML)::

        admin_keys: [change-me-admin]
        keys:
          key-for-app-a: forget-people   # an artifact name given with --artifact or POST /v1/artifacts
          key-for-research: base         # the unmodified base model
    """

    keys: dict[str, str] = field(default_factory=dict)
    admin_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.keys.items()):
            raise ConfigError("keys file: 'keys' must map API key strings to policy names", "write e.g. keys: {my-key: my-artifact}")
        if not isinstance(self.admin_keys, list) or not all(isinstance(k, str) for k in self.admin_keys):
            raise ConfigError("keys file: 'admin_keys' must be a list of strings", "write e.g. admin_keys: [my-admin-key]")
        for key in list(self.keys) + list(self.admin_keys):
            if len(key) < 8:
                raise ConfigError(f"API key {key[:3]!r}... is shorter than 8 characters", "use long random keys (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")

    @classmethod
    def load(cls, path: str | Path) -> "KeyTable":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"keys file {str(path)!r} does not exist", "create it (see docs/serving.md)")
        if path.stat().st_size > 10_000_000:
            raise ConfigError(f"keys file {str(path)!r} is larger than 10 MB", "point --keys at the YAML keys file (see docs/serving.md)")
        try:
            raw = safe_load_unique(path.read_text(encoding="utf-8")) or {}
        except DuplicateKeyError as err:
            raise ConfigError(f"keys file {str(path)!r}: {err.problem}", "give every API key once (a repeated key would silently rebind it)") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"keys file {str(path)!r} is not valid YAML ({str(err).splitlines()[0]})", "fix the YAML syntax") from None
        except UnicodeDecodeError:
            raise ConfigError(f"keys file {str(path)!r} is not UTF-8 text", "save it as UTF-8") from None
        if not isinstance(raw, dict) or set(raw) - {"keys", "admin_keys"}:
            raise ConfigError(f"keys file {str(path)!r} must have only 'keys' and 'admin_keys'", "see docs/serving.md for the format")
        keys, admins = raw.get("keys") or {}, raw.get("admin_keys") or []
        if not isinstance(keys, dict):
            raise ConfigError(f"keys file {str(path)!r}: 'keys' is a {type(keys).__name__}, not a mapping of API key to policy",
                              "write e.g. keys: {my-long-key: my-artifact}")
        if isinstance(admins, str):
            admins = [admins]
        if not isinstance(admins, list):
            raise ConfigError(f"keys file {str(path)!r}: 'admin_keys' is a {type(admins).__name__}, not a list",
                              "write e.g. admin_keys: [my-admin-key]")
        for value in list(keys.values()) + list(keys) + admins:
            if value is None or isinstance(value, (dict, list)):
                raise ConfigError(f"keys file {str(path)!r}: every key and policy must be a single text", "write e.g. keys: {my-long-key: my-artifact}")
        return cls(keys={str(k): str(v) for k, v in keys.items()}, admin_keys=[str(k) for k in admins])

    def policy_of(self, key: str | None) -> str | None:
        """The policy bound to ``key`` (constant-time comparison), or None for an unknown key."""
        if not key:
            return None
        found = None
        for known, policy in self.keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = policy
        return found

    def is_known(self, key: str | None) -> bool:
        """Whether ``key`` is any key of this table (policy or admin)."""
        return self.policy_of(key) is not None or self.is_admin(key)

    def is_admin(self, key: str | None) -> bool:
        return bool(key) and any(hmac.compare_digest(k.encode(), key.encode()) for k in self.admin_keys)
