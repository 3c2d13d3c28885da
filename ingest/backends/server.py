"""The server backend: a Qdrant server or cluster at ``QDRANT_URL`` through ``qdrant-client``.

One collection per index version (``<collection_prefix>_<version>``); publishing moves the
alias ``<collection_prefix>`` to it, so other clients of the server see the same current
version. For several app replicas, several writers, snapshots and replication.

Tests run this backend on ``qdrant-client``'s local mode (``QdrantClient(":memory:")`` or
``path=...``), which speaks the same client API as a server: pass it as ``client=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .base import INDEX_FORMAT, IndexBackendError, IndexHit, IndexPoint, IndexQuery, IndexSpec


def connect(settings):
    """A client for the server at QDRANT_URL."""
    from qdrant_client import QdrantClient

    if not settings.qdrant_url:
        raise IndexBackendError(
            "The server index backend needs QDRANT_URL (e.g. http://localhost:6333); set it, or set "
            "GUIDES_INDEX_BACKEND=embedded to use the embedded engine."
        )
    try:
        return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=30)
    except Exception as e:  # noqa: BLE001
        raise IndexBackendError(f"Cannot reach Qdrant at QDRANT_URL={settings.qdrant_url}: {e}") from e


class _ClientUser:
    def __init__(self, backend: "ServerBackend"):
        self.backend = backend
        self.client = backend.client()

    def close(self) -> None:
        if self.client is not None:
            self.backend.release(self.client)
            self.client = None


class ServerWriter(_ClientUser):
    def __init__(self, backend: "ServerBackend", spec: IndexSpec):
        from qdrant_client import models

        super().__init__(backend)
        self.spec = spec
        self.models = models
        hnsw = models.HnswConfigDiff(m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct)
        if self.client.collection_exists(spec.name):        # left by an interrupted ingest of this version
            self.client.delete_collection(spec.name)
        self.client.create_collection(
            spec.name,
            vectors_config={"dense": models.VectorParams(size=spec.dim, distance=models.Distance.COSINE, hnsw_config=hnsw)},
            sparse_vectors_config={"bm25": models.SparseVectorParams()},
        )

    def add(self, points: Sequence[IndexPoint]) -> None:
        m = self.models
        self.client.upsert(self.spec.name, wait=True, points=[
            m.PointStruct(id=p.id, payload=p.payload, vector={
                "dense": p.dense, "bm25": m.SparseVector(indices=p.sparse[0], values=p.sparse[1])})
            for p in points
        ])

    def finish(self) -> dict:
        n = self.client.count(self.spec.name, exact=True).count
        if n != self.spec.n_points:
            raise IndexBackendError(
                f"Collection {self.spec.name} at QDRANT_URL holds {n} points after writing, expected "
                f"{self.spec.n_points}; nothing was published. Run `guides ingest --rebuild`."
            )
        self.close()
        return {"backend": "server", "format": INDEX_FORMAT, "engine": "qdrant-server",
                "url": self.backend.settings.qdrant_url if self.backend.settings else None,
                "collection": self.spec.name, "name": self.spec.name, "n_points": self.spec.n_points,
                "dim": self.spec.dim, "dense_index": self.spec.dense_index, "hnsw_m": self.spec.hnsw_m,
                "hnsw_ef_construct": self.spec.hnsw_ef_construct}


class ServerReader(_ClientUser):
    def __init__(self, backend: "ServerBackend", info: dict):
        from qdrant_client import models

        super().__init__(backend)
        self.collection = info["collection"]
        self.models = models
        if not self.client.collection_exists(self.collection):
            self.close()
            raise IndexBackendError(
                f"Collection {self.collection} is missing at QDRANT_URL={backend.settings.qdrant_url if backend.settings else None}; "
                f"run `guides ingest --rebuild` to write it again."
            )

    def query(self, q: IndexQuery) -> list[IndexHit]:
        m = self.models
        params = m.SearchParams(exact=q.exact, hnsw_ef=None if q.exact else q.hnsw_ef)
        sparse = m.SparseVector(indices=q.sparse[0], values=q.sparse[1]) if q.sparse is not None else None
        c = self.client
        if q.mode == "dense":
            res = c.query_points(self.collection, query=q.dense, using="dense", limit=q.limit, search_params=params,
                                 with_payload=True)
        elif q.mode == "bm25":
            if not q.sparse or not q.sparse[0]:
                return []
            res = c.query_points(self.collection, query=sparse, using="bm25", limit=q.limit, with_payload=True)
        else:
            prefetch = [m.Prefetch(query=q.dense, using="dense", limit=q.prefetch_limit, params=params)]
            if q.sparse and q.sparse[0]:
                prefetch.append(m.Prefetch(query=sparse, using="bm25", limit=q.prefetch_limit))
            fusion = (m.RrfQuery(rrf=m.Rrf(k=q.rrf_k)) if q.fusion == "rrf"
                      else m.FusionQuery(fusion=m.Fusion.DBSF))
            res = c.query_points(self.collection, prefetch=prefetch, query=fusion, limit=q.limit, with_payload=True)
        return [IndexHit(payload=p.payload, score=float(p.score)) for p in res.points]


class ServerBackend:
    """Qdrant server through qdrant-client; see the module docstring.

    ``client``: a client to use instead of connecting to QDRANT_URL (owned by the caller, never closed here).
    """
    name = "server"

    def __init__(self, settings=None, *, client=None):
        self.settings = settings
        self._shared = client

    def client(self):
        return self._shared if self._shared is not None else connect(self.settings)

    def release(self, client) -> None:
        if client is not self._shared:
            client.close()

    def create(self, version_path: Path, spec: IndexSpec) -> ServerWriter:
        return ServerWriter(self, spec)

    def open(self, version_path: Path, info: dict) -> ServerReader:
        return ServerReader(self, info)

    def publish(self, info: dict) -> None:
        from qdrant_client import models

        c = self.client()
        try:
            alias = self.settings.collection_prefix if self.settings else "guides"
            c.update_collection_aliases(change_aliases_operations=[
                models.CreateAliasOperation(create_alias=models.CreateAlias(
                    collection_name=info["collection"], alias_name=alias)),
            ])
        finally:
            self.release(c)

    def drop(self, version_path: Path, info: dict) -> None:
        c = self.client()
        try:
            if c.collection_exists(info["collection"]):
                c.delete_collection(info["collection"])
        finally:
            self.release(c)
