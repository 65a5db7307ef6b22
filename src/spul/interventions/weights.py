"""Weight changes as interventions: a LoRA delta (forward hooks) or whole replacement tensors (a swap).

Both leave the shared model untouched outside ``applied``: the LoRA hooks are removed by their handles, the
swapped tensors are put back by reference, so one frozen model can serve many weight-changing artifacts.
``LoraDelta`` computes exactly what a PEFT LoRA layer computes in eval mode (``base(x) + B(A(x)) · scaling``,
the input cast to the adapter's dtype, the sum cast back), so its scores equal the ``PeftModel``'s.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from spul.errors import ArtifactError
from spul.interventions.base import Intervention


class LoraDelta(Intervention):
    """``{module name: (A [r, in], B [out, r], scaling)}`` added to those modules' outputs while applied."""

    kind = "lora"
    changes_weights = True

    def __init__(self, name: str, deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float]], **kwargs):
        super().__init__(name, **kwargs)
        self.deltas = deltas
        self._active: torch.Tensor | None = None  # rows the delta applies to in the next forward (None: all)

    @classmethod
    def from_peft_folder(cls, name: str, folder: str | Path, **kwargs) -> "LoraDelta":
        """Read a PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
        import json

        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / "adapter_config.json").read_text())
            weights = load_file(str(folder / "adapter_model.safetensors"))
        except (OSError, ValueError) as err:
            raise ArtifactError(f"LoRA artifact {str(folder)!r} could not be read ({str(err).splitlines()[0][:120]})", "re-train it") from None
        if config.get("peft_type") != "LORA" or config.get("rank_pattern") or config.get("alpha_pattern"):
            raise ArtifactError(f"{str(folder)!r} is not a plain LoRA adapter", "re-train it with spul (uniform rank and alpha)")
        r, alpha = int(config["r"]), float(config["lora_alpha"])
        scaling = alpha / (r ** 0.5) if config.get("use_rslora") else alpha / r
        deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
        for key, a in weights.items():
            if not key.endswith(".lora_A.weight"):
                continue
            module = key[: -len(".lora_A.weight")].removeprefix("base_model.model.")
            b = weights.get(key.replace(".lora_A.weight", ".lora_B.weight"))
            if b is None:
                raise ArtifactError(f"LoRA artifact {str(folder)!r} lacks lora_B for {module}", "re-train it")
            deltas[module] = (a, b, scaling)
        if not deltas:
            raise ArtifactError(f"LoRA artifact {str(folder)!r} holds no LoRA weights", "re-train it")
        return cls(name, deltas, **kwargs)

    def _hook(self, a: torch.Tensor, b: torch.Tensor, scaling: float):
        def hook(module, args, output):
            x = args[0].to(a.dtype)
            delta = F.linear(F.linear(x, a), b) * scaling
            if self._active is not None:
                delta = delta * self._active.to(delta.device, delta.dtype).view(-1, *([1] * (delta.dim() - 1)))
            return (output + delta).to(output.dtype)

        return hook

    @contextlib.contextmanager
    def applied(self, model, texts: list[str], prompts: list[list[int]]) -> Iterator:
        from spul.models.forward import unwrap

        modules = dict(unwrap(model).named_modules())
        missing = [m for m in self.deltas if m not in modules]
        if missing:
            raise ArtifactError(f"the model has no module {missing[0]!r} that the LoRA artifact {self.name!r} changes",
                                "load the artifact onto the model it was trained from")
        device = next(unwrap(model).parameters()).device
        for m, (a, b, s) in list(self.deltas.items()):
            if a.device != device:
                self.deltas[m] = (a.to(device), b.to(device), s)
        handles = [modules[m].register_forward_hook(self._hook(a, b, s)) for m, (a, b, s) in self.deltas.items()]

        def hook(rows, active=None):
            self._active = None if active is None else torch.as_tensor(np.asarray(active, dtype=bool))
            return None

        try:
            yield hook
        finally:
            for h in handles:
                h.remove()
            self._active = None

    def trainable_parameters(self, model=None) -> list[torch.Tensor]:
        return [t for a, b, _ in self.deltas.values() for t in (a, b)]


class WeightSwap(Intervention):
    """Whole replacement tensors ``{parameter name: tensor}`` swapped in while applied (full fine-tuning)."""

    kind = "weights"
    changes_weights = True

    def __init__(self, name: str, tensors: dict[str, torch.Tensor], **kwargs):
        super().__init__(name, **kwargs)
        self.tensors = tensors

    @contextlib.contextmanager
    def applied(self, model, texts: list[str], prompts: list[list[int]]) -> Iterator:
        from spul.models.forward import unwrap

        params = dict(unwrap(model).named_parameters())
        missing = [n for n in self.tensors if n not in params]
        if missing or any(params[n].shape != t.shape for n, t in self.tensors.items()):
            raise ArtifactError(f"the weights of artifact {self.name!r} do not fit this model", "load it onto the model it was trained from")
        saved = {n: params[n].data for n in self.tensors}
        try:
            for n, t in self.tensors.items():
                params[n].data = t.to(params[n].device)
            yield None
        finally:
            for n, t in saved.items():
                params[n].data = t

    def trainable_parameters(self, model=None) -> list[torch.Tensor]:
        """While applied, the model's own parameters hold the swapped tensors: training them changes only those."""
        from spul.models.forward import unwrap

        if model is None:
            return list(self.tensors.values())
        params = dict(unwrap(model).named_parameters())
        return [params[n] for n in self.tensors]
