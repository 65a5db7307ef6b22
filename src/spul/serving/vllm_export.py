"""Export a soft prompt for vLLM's prompt-embeds input (a server started with ``--enable-prompt-embeds``).

vLLM takes a whole prompt as embeddings ``[seq_len, hidden]``. A SPUL artifact therefore travels as its
``[p, d]`` vectors (safetensors, model dtype); the client concatenates them in front of the token embeddings
of its request and sends the result base64-encoded from ``torch.save`` in the ``prompt_embeds`` field of the
Completions API. The client then holds the vectors, so this route suits trusted clients only: unlike
``spul serve``, nothing stops a client from leaving the prompt out.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import torch

from spul.errors import ArtifactError
from spul.interventions import Gated, Intervention
from spul.io import atomic_dir, write_json, write_text

TENSOR_FILE = "soft_prompt.safetensors"
TENSOR_KEY = "soft_prompt"
INFO_FILE = "vllm.json"

README = """# SPUL soft prompt for vLLM

`{tensor}` holds the unlearning soft prompt `{key}`: shape {shape}, dtype {dtype}, for base model
`{base}` (weights fingerprint `{fingerprint}`). It only means something on that exact model.

1. Start vLLM with prompt embeddings enabled:

       vllm serve {base} --enable-prompt-embeds

2. For every request, build the embeddings of the full prompt and put the soft prompt in front:

       from safetensors.torch import load_file
       soft = load_file("{tensor}")["{key}"]                      # [p, d]
       ids = tokenizer(prompt_text, return_tensors="pt").input_ids[0]
       tokens = model.get_input_embeddings()(ids).to(soft.dtype)  # [T, d]
       embeds = torch.cat([soft, tokens], dim=0)                  # [p + T, d]

3. Send it base64-encoded from `torch.save` in the Completions API:

       buf = io.BytesIO(); torch.save(embeds, buf)
       client.completions.create(model="{base}", prompt=None, max_tokens=32, temperature=0.0,
                                 extra_body={{"prompt_embeds": base64.b64encode(buf.getvalue()).decode()}})

The vectors must be prepended to every request: a client that leaves them out gets the base model's old
behaviour. Use `spul serve` when the policy must be enforced on the server.
"""


def export_vllm(source: Intervention | torch.Tensor, meta: dict[str, Any], out: str | Path) -> Path:
    """Write ``soft_prompt.safetensors`` ([p, d], model dtype), ``vllm.json`` and ``README.md`` into ``out``.

    ``source`` is an intervention (only an ungated soft prompt travels as prompt embeddings) or its vectors.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if isinstance(source, Intervention):
        if source.vectors is None or source.changes_weights or isinstance(source, Gated):
            raise ArtifactError(f"a {source.kind!r} intervention cannot be exported as prompt embeddings",
                                "export a SPUL soft prompt; serve other methods with spul serve")
        vectors = source.vectors
    else:
        vectors = source
    vectors = vectors.detach().cpu().contiguous()
    info = {
        "format": "spul-vllm-prompt-embeds/1",
        "tensor_file": TENSOR_FILE,
        "tensor_key": TENSOR_KEY,
        "shape": list(vectors.shape),
        "dtype": str(vectors.dtype).removeprefix("torch."),
        "base_model": meta.get("base_model", ""),
        "base_fingerprint": meta.get("base_fingerprint", ""),
        "placement": "prepend to the token embeddings of every request",
        "vllm": {"server_flag": "--enable-prompt-embeds", "request_field": "prompt_embeds",
                 "encoding": "base64 of torch.save(tensor [p + T, d])"},
    }
    with atomic_dir(out) as tmp:
        save_file({TENSOR_KEY: vectors}, str(tmp / TENSOR_FILE), metadata={"base_fingerprint": info["base_fingerprint"]})
        write_json(tmp / INFO_FILE, info)
        write_text(tmp / "README.md", README.format(tensor=TENSOR_FILE, key=TENSOR_KEY, shape=tuple(vectors.shape), dtype=info["dtype"],
                                                    base=info["base_model"], fingerprint=info["base_fingerprint"][:12]))
    return out


def load_exported(folder: str | Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / TENSOR_FILE))[TENSOR_KEY]


def prompt_embeds_payload(soft: torch.Tensor, token_embeds: torch.Tensor) -> str:
    """The ``prompt_embeds`` string for one request: base64 of ``torch.save(cat([soft, tokens]))``."""
    embeds = torch.cat([soft, token_embeds.to(soft.dtype)], dim=0)
    buf = io.BytesIO()
    torch.save(embeds, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")
