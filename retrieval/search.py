"""Hybrid search fused inside Qdrant: dense and BM25 prefetches, then RRF or DBSF (Query API).

The index backend (``ingest/backends``: the embedded engine or a Qdrant server) runs the
query; this module builds it. One ``IndexHandle`` per process holds the current index
version open, with a reader lease on it so that no ``guides ingest`` removes it meanwhile.
When a new version is published, the handle keeps answering from the version it has open
until the next question, then opens the new one and releases the old.

Example::

    handle = IndexHandle(settings)
    searcher = HybridSearcher(settings, embedder=load_embedder(settings.embed_model), index=handle)
    hits, timings = searcher.search("why scale attention by sqrt(d_k)?", mode="hybrid")
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from core.settings import Settings
from core.types import Hit
from core.text import tokenize
from ingest.bm25 import BM25Encoder
from ingest.embed import Embedder
from ingest.backends import IndexBackend, IndexBackendError, IndexQuery, IndexReader
from ingest.store import IndexError_, IndexLayout, Lease, Version

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")


class IndexHandle:
    """The current index version's reader, lease and BM25 statistics, shared and thread-safe."""

    def __init__(self, settings: Settings, *, backend: IndexBackend | None = None):
        self.settings = settings
        self.layout = IndexLayout(settings, backend=backend)
        self.lock = threading.RLock()
        self._reader: IndexReader | None = None
        self._lease: Lease | None = None
        self.version: Version | None = None
        self.bm25: BM25Encoder | None = None

    def refresh(self) -> Version:
        """Open the current version, moving to a newer one if it was published (and releasing the old)."""
        with self.lock:
            vid = self.layout.current_vid()
            if self.version is not None and vid == self.version.vid:
                return self.version
            v, lease = self.layout.lease_current()
            try:
                why = v.outdated_reason() or v.backend_mismatch(self.settings)
                if why:
                    raise IndexError_(f"The index version {v.vid} cannot be searched: {why}. Run `guides ingest` "
                                      f"to rebuild it (once; the vectors are reused).")
                try:
                    reader = self.layout.backend.open(v.path, v.index_info)
                except IndexBackendError as e:
                    raise IndexError_(str(e)) from None
            except BaseException:
                lease.release()
                raise
            self.close()
            self._reader, self._lease, self.version = reader, lease, v
            self.bm25 = BM25Encoder.from_dict(v.meta["bm25"])
            return v

    @property
    def reader(self) -> IndexReader:
        self.refresh()
        return self._reader

    def close(self) -> None:
        with self.lock:
            if self._reader is not None:
                self._reader.close()
            if self._lease is not None:
                self._lease.release()
            self._reader, self._lease, self.version = None, None, None


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
            sparse = None
            if mode in ("hybrid", "bm25"):
                sparse = self.index.bm25.encode_query(tokenize(query))
            n = v.index_info.get("n_points", v.meta.get("n_chunks", 0))
            q = IndexQuery(mode=mode, limit=top_k, dense=dense_vec, sparse=sparse, prefetch_limit=prefetch_limit,
                           fusion=self.settings.fusion, rrf_k=self.settings.rrf_k,
                           exact=n <= self.settings.dense_exact_max_points, hnsw_ef=self.settings.hnsw_ef)
            found = self.index.reader.query(q)
        timings["search"] = (time.perf_counter() - t1) * 1000
        hits = [Hit(payload=p.payload, score=p.score, rank=r, scores={f"{mode}": p.score})
                for r, p in enumerate(found, start=1)]
        return hits, timings
