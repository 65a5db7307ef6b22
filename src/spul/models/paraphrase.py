"""Model paraphrases for the attack suite's ``paraphrase`` family: a causal LM rewrites texts, greedily.

``ModelParaphraser(model)`` takes a model name or folder (the packaged SmolLM2 by default, ``packaged:NAME``,
any hub id or local folder) and answers ``paraphraser(texts, instruction) -> rewrites``. Each rewrite is a
greedy continuation (no sampling, one row at a time, so no padding can change a token) of a fixed prompt: the
model's chat template around "INSTRUCTION\\n\\nTEXT" when it has one, else a plain "INSTRUCTION / Text: /
Rewritten:" prompt. The first non-empty line of the answer, without quotes, is the rewrite.

Rewrites are cached on disk, one small JSON file per (model weights fingerprint, prompt format, generation
length, instruction, text) under ``$SPUL_PARAPHRASE_CACHE``, else ``$SPUL_CACHE/paraphrases`` (default
``~/.cache/spul/paraphrases``): the same inputs give the same rewrite on every run, and a cached text never
runs the model (the model still loads once to compute its fingerprint, which is what keys the cache).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from spul.io import sha256_text, write_json

log = logging.getLogger(__name__)

PROMPT_FORMAT = "spul-paraphrase/1"  # bump when the prompt or the post-processing changes (new cache keys)


def cache_root() -> Path:
    if os.environ.get("SPUL_PARAPHRASE_CACHE"):
        return Path(os.path.expanduser(os.environ["SPUL_PARAPHRASE_CACHE"]))
    root = os.environ.get("SPUL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "spul")
    return Path(root) / "paraphrases"


def _clean(answer: str, text: str) -> str:
    lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    out = lines[0] if lines else ""
    out = re.sub(r"^(rewritten|paraphrase|rewrite|output|answer)\s*:\s*", "", out, flags=re.IGNORECASE).strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'":
        out = out[1:-1].strip()
    return out[: max(64, 3 * len(text))]


class ModelParaphraser:
    """Greedy rewrites of texts by a causal LM, cached on disk (see the module docstring)."""

    def __init__(self, model: str | None = None, *, cache_dir: str | os.PathLike | None = None, max_new_tokens: int = 48,
                 model_and_tokenizer: tuple[Any, Any] | None = None):
        from spul.models.config import DEFAULT_MODEL

        self.name = model or DEFAULT_MODEL
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self.max_new_tokens = int(max_new_tokens)
        self._loaded = model_and_tokenizer
        self._fingerprint: str | None = None
        self.generated = 0  # rewrites this object computed with the model (the others came from the cache)

    def _model(self):
        if self._loaded is None:
            from spul.models.loading import ModelConfig, load_model

            self._loaded = load_model(ModelConfig(name_or_path=self.name, dtype="float32", device="cpu"))
        return self._loaded

    @property
    def identity(self) -> str:
        """The model's weights fingerprint and the generation settings: what decides a rewrite."""
        if self._fingerprint is None:
            from spul.models.loading import weights_fingerprint

            self._fingerprint = weights_fingerprint(self._model()[0])
        return f"{self._fingerprint[:24]}:{PROMPT_FORMAT}:{self.max_new_tokens}"

    def _path(self, instruction: str, text: str) -> Path:
        key = sha256_text(self.identity, instruction, text)
        return self.cache_dir / self.identity.split(":", 1)[0] / key[:2] / f"{key}.json"

    def prompt_ids(self, instruction: str, text: str) -> list[int]:
        _, tokenizer = self._model()
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": f"{instruction}\n\n{text}"}], add_generation_prompt=True,
                                                tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            return list(ids)
        return list(tokenizer(f"{instruction}\nText: {text}\nRewritten:", add_special_tokens=True).input_ids)

    def _generate(self, instruction: str, text: str) -> str:
        import torch

        model, tokenizer = self._model()
        ids = torch.tensor([self.prompt_ids(instruction, text)], dtype=torch.long, device=next(model.parameters()).device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                 max_new_tokens=self.max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        self.generated += 1
        return _clean(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), text)

    def __call__(self, texts: list[str], instruction: str) -> list[str]:
        out = []
        for text in texts:
            path = self._path(instruction, text)
            rewrite = None
            if path.is_file():
                try:
                    rewrite = json.loads(path.read_text(encoding="utf-8"))["rewrite"]
                except (OSError, ValueError, KeyError, TypeError):
                    rewrite = None  # a damaged entry is recomputed
            if not isinstance(rewrite, str):
                rewrite = self._generate(instruction, text)
                try:
                    write_json(path, {"model": self.name, "identity": self.identity, "instruction": instruction, "text": text,
                                      "rewrite": rewrite})
                except OSError as err:
                    log.warning("could not write the paraphrase cache in %s (%s); continuing without it", self.cache_dir, err)
            out.append(rewrite)
        return out


@functools.lru_cache(maxsize=2)
def paraphraser_for(model: str | None) -> ModelParaphraser | None:
    """One paraphraser per model name per process (training and the audit reuse it); None for no model."""
    return ModelParaphraser(model) if model else None
