"""Hybrid search fused inside Qdrant: dense and BM25 prefetches, then RRF or DBSF (Query API).

One ``IndexHandle`` per process holds the Qdrant client of the current index version and
re-opens it when a new version is published, so the app picks up a re-index without a
restart. Embedded Qdrant allows one client per folder, so every caller in a process must
share the handle.

Example::

    handle = IndexHandle(settings)
    searcher = HybridSearcher(settings, embedder=load_embedder(settings.embed_model), index=handle)
    hits, timings = searcher.search("why scale attention by sqrt(d_k)?", mode="hybrid")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from guides_qa.config import Settings
from ingest.bm25 import BM25Encoder, tokenize
from ingest.embed import Embedder
from ingest.store import IndexError_, IndexLayout, Version, open_qdrant

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")


@dataclass
class Hit:
    """One ranked passage: the indexed chunk's payload plus its scores."""
    payload: dict
    score: float
    rank: int
    scores: dict = field(default_factory=dict)     # per stage: fused, rerank, ...

    @property
    def chunk_id(self) -> str:
        return self.payload["chunk_id"]

    @property
    def text(self) -> str:
        return self.payload["text"]

    def to_json(self) -> dict:
        p = self.payload
        out = {
            "rank": self.rank,
            "chunk_id": p["chunk_id"],
            "guide": p["guide"],
            "guide_title": p["guide_title"],
            "section": p["section"],
            "lines": list(p["lines"]),
            "text": p["text"],
            "score": round(float(self.score), 6),
        }
        if self.scores:
            out["scores"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.scores.items()}
        return out


class IndexHandle:
    """The current index version's Qdrant client and BM25 statistics, shared and thread-safe."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.layout = IndexLayout(settings)
        self.lock = threading.RLock()
        self._client = None
        self.version: Version | None = None
        self.bm25: BM25Encoder | None = None

    def refresh(self) -> Version:
        """Open the current version, re-opening if a newer one was published."""
        with self.lock:
            vid = self.layout.current_vid()
            if self.version is not None and vid == self.version.vid:
                return self.version
            v = self.layout.require_current()
            if v.meta.get("qdrant_url") != self.settings.qdrant_url:
                raise IndexError_(
                    f"The index was built for QDRANT_URL={v.meta.get('qdrant_url')!r} but QDRANT_URL is now "
                    f"{self.settings.qdrant_url!r}; run `guides ingest` to build it for this setting."
                )
            client = open_qdrant(self.settings, v.path)
            self.close()
            self._client, self.version = client, v
            self.bm25 = BM25Encoder.from_dict(v.meta["bm25"])
            return v

    @property
    def client(self):
        self.refresh()
        return self._client

    @property
    def collection(self) -> str:
        return self.refresh().meta["collection"]

    def close(self) -> None:
        with self.lock:
            if self._client is not None:
                self._client.close()
            self._client, self.version = None, None


class HybridSearcher:
    """Dense + BM25 search with fusion in Qdrant. ``search`` returns hits and stage timings (ms)."""

    def __init__(self, settings: Settings, *, embedder: Embedder, index: IndexHandle):
        self.settings = settings
        self.embedder = embedder
        self.index = index

    def _check_model(self, v: Version) -> None:
        if v.meta.get("embed_model") != self.embedder.name and not self.embedder.name.startswith("fake:"):
            raise IndexError_(
                f"The index was embedded with {v.meta.get('embed_model')!r} but the embedder is "
                f"{self.embedder.name!r}; run `guides ingest` to rebuild it for GUIDES_EMBED_MODEL."
            )

    def search(self, query: str, *, mode: Mode = "hybrid", top_k: int | None = None,
               prefetch_limit: int | None = None) -> tuple[list[Hit], dict]:
        from qdrant_client import models

        if mode not in MODES:
            raise ValueError(f"Unknown search mode {mode!r}. Supported modes are: {list(MODES)}")
        top_k = top_k or self.settings.top_k
        prefetch_limit = max(prefetch_limit or self.settings.prefetch_limit, top_k)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        dense_vec = None
        if mode in ("hybrid", "dense"):
            dense_vec = self.embedder.embed([query])[0].tolist()
        timings["embed"] = (time.perf_counter() - t0) * 1000

        t1 = time.perf_counter()
        with self.index.lock:
            v = self.index.refresh()
            self._check_model(v)
            bm25 = self.index.bm25
            sparse = None
            if mode in ("hybrid", "bm25"):
                idx, vals = bm25.encode_query(tokenize(query))
                sparse = models.SparseVector(indices=idx, values=vals)
            client, coll = self.index.client, v.meta["collection"]
            if mode == "dense":
                res = client.query_points(coll, query=dense_vec, using="dense", limit=top_k, with_payload=True)
            elif mode == "bm25":
                res = (client.query_points(coll, query=sparse, using="bm25", limit=top_k, with_payload=True)
                       if sparse.indices else None)
            else:
                prefetch = [models.Prefetch(query=dense_vec, using="dense", limit=prefetch_limit)]
                if sparse.indices:
                    prefetch.append(models.Prefetch(query=sparse, using="bm25", limit=prefetch_limit))
                if self.settings.fusion == "rrf":
                    fusion = models.RrfQuery(rrf=models.Rrf(k=self.settings.rrf_k))
                else:
                    fusion = models.FusionQuery(fusion=models.Fusion.DBSF)
                res = client.query_points(coll, prefetch=prefetch, query=fusion, limit=top_k, with_payload=True)
        timings["search"] = (time.perf_counter() - t1) * 1000
        points = res.points if res is not None else []
        hits = [Hit(payload=p.payload, score=float(p.score), rank=r, scores={f"{mode}": float(p.score)})
                for r, p in enumerate(points, start=1)]
        return hits, timings
