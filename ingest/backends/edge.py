"""The embedded backend: Qdrant's engine in this process (``qdrant-edge``), one shard per version.

A version's shard lives in ``<version>/shard/``. It is written once by ``guides ingest``
with the write-ahead log off, optimized (segments merged; the HNSW graph built when the
version has more than ``dense_exact_max_points`` chunks) and flushed before the version is
published. After that nothing writes to it, so any number of processes (the app,
``guides ask``, ``guides eval``, the next ``guides ingest``) load and search it at once.
(Opening a shard makes the engine rewrite a few of its files with identical bytes: its
JSON files by atomic rename, its memory maps at the same size; the content never changes,
which tests/ingest/test_store.py checks across processes.)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from .base import INDEX_FORMAT, IndexBackendError, IndexHit, IndexPoint, IndexQuery, IndexSpec

SHARD_DIR = "shard"
# Segment sizes are given to the engine in KB: 1 KB means "always" (index and optimize every segment).
_ALWAYS_KB = 1


def _qe():
    try:
        import qdrant_edge
    except ImportError as e:  # pragma: no cover - installed with the project
        raise IndexBackendError(
            "The embedded index needs qdrant-edge-py: run `make install` (or `pip install qdrant-edge-py==0.9.0`), "
            "or set QDRANT_URL to use a Qdrant server."
        ) from e
    return qdrant_edge


class EdgeWriter:
    def __init__(self, path: Path, spec: IndexSpec):
        qe = _qe()
        self.path, self.spec = path, spec
        hnsw = spec.dense_index == "hnsw"
        # optimize() turns the points into immutable, memory-mapped segments either way (opening the 30k-chunk
        # bench index: 0.14 s, against 0.41 s left in the appendable segment; hybrid p50 6 ms against 23 ms);
        # m=0 leaves out the HNSW graph when dense search is exact.
        graph = qe.HnswIndexConfig(m=spec.hnsw_m if hnsw else 0, ef_construct=spec.hnsw_ef_construct,
                                   full_scan_threshold=_ALWAYS_KB)
        cfg = qe.EdgeConfig(
            vectors={"dense": qe.EdgeVectorParams(size=spec.dim, distance=qe.Distance.Cosine, hnsw_config=graph)},
            sparse_vectors={"bm25": qe.EdgeSparseVectorParams()},
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=_ALWAYS_KB),
            wal_enabled=False,       # a published shard is read-only; without a WAL several processes may load it
        )
        if path.exists():
            shutil.rmtree(path)
        self.shard = qe.EdgeShard.create(str(path), cfg)
        self._qe = qe

    def add(self, points: Sequence[IndexPoint]) -> None:
        qe = self._qe
        self.shard.update(qe.UpdateOperation.upsert_points([
            qe.Point(p.id, {"dense": p.dense, "bm25": qe.SparseVector(p.sparse[0], p.sparse[1])}, p.payload)
            for p in points
        ]))

    def finish(self) -> dict:
        self.shard.optimize()
        self.shard.flush()
        info = self.shard.info()
        if info.points_count != self.spec.n_points:
            raise IndexBackendError(
                f"The embedded index at {self.path} holds {info.points_count} points after writing, expected "
                f"{self.spec.n_points}; nothing was published. Run `guides ingest --rebuild`."
            )
        self.close()
        # The engine completes edge_config.json on a shard's first load; do that here, before publishing, so a
        # published shard's bytes never change (later loads rewrite identical bytes, by atomic rename).
        self._qe.EdgeShard.load(str(self.path)).close()
        return {"backend": "embedded", "format": INDEX_FORMAT, "engine": "qdrant-edge", "path": SHARD_DIR,
                "name": self.spec.name, "n_points": self.spec.n_points, "dim": self.spec.dim,
                "dense_index": self.spec.dense_index, "hnsw_m": self.spec.hnsw_m,
                "hnsw_ef_construct": self.spec.hnsw_ef_construct, "segments": info.segments_count}

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None


class EdgeReader:
    def __init__(self, path: Path):
        qe = _qe()
        if not (path / "edge_config.json").is_file():
            raise IndexBackendError(f"No embedded index at {path}; run `guides ingest --rebuild`.")
        try:
            self.shard = qe.EdgeShard.load(str(path))
        except Exception as e:  # noqa: BLE001 - the engine's errors are plain exceptions
            raise IndexBackendError(f"Cannot open the embedded index at {path}: {e}. Run `guides ingest --rebuild`.") from e
        self._qe = qe

    def query(self, q: IndexQuery) -> list[IndexHit]:
        qe = self._qe
        dense_params = qe.SearchParams(exact=q.exact, hnsw_ef=None if q.exact else q.hnsw_ef)
        sparse = qe.SparseVector(q.sparse[0], q.sparse[1]) if q.sparse is not None else None
        if q.mode == "dense":
            req = qe.QueryRequest(limit=q.limit, query=qe.Query.Nearest(q.dense, using="dense"),
                                  params=dense_params, with_payload=True)
        elif q.mode == "bm25":
            if not q.sparse or not q.sparse[0]:
                return []
            req = qe.QueryRequest(limit=q.limit, query=qe.Query.Nearest(sparse, using="bm25"), with_payload=True)
        else:
            prefetch = [qe.Prefetch(limit=q.prefetch_limit, query=qe.Query.Nearest(q.dense, using="dense"),
                                    params=dense_params)]
            if q.sparse and q.sparse[0]:
                prefetch.append(qe.Prefetch(limit=q.prefetch_limit, query=qe.Query.Nearest(sparse, using="bm25")))
            fusion = qe.Fusion.Rrf(k=q.rrf_k) if q.fusion == "rrf" else qe.Fusion.Dbsf()
            req = qe.QueryRequest(limit=q.limit, prefetches=prefetch, query=fusion, with_payload=True)
        return [IndexHit(payload=p.payload, score=float(p.score)) for p in self.shard.query(req)]

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None


class EdgeBackend:
    """Qdrant's in-process engine; see the module docstring."""
    name = "embedded"

    def __init__(self, settings=None):
        self.settings = settings

    def create(self, version_path: Path, spec: IndexSpec) -> EdgeWriter:
        return EdgeWriter(version_path / SHARD_DIR, spec)

    def open(self, version_path: Path, info: dict) -> EdgeReader:
        return EdgeReader(version_path / info.get("path", SHARD_DIR))

    def publish(self, info: dict) -> None:
        pass                    # the version folder is the whole index: publishing it is the store's rename

    def drop(self, version_path: Path, info: dict) -> None:
        pass                    # removed with the version folder
