"""Index backends: where a version's vectors live and how a hybrid query runs on them.

Two backends behind one small interface, chosen by name (setting ``index_backend``):

- ``embedded``: Qdrant's own engine in this process (``qdrant-edge``), one shard folder per
  index version, written once and read by any number of processes.
- ``server``: a Qdrant server or cluster at ``QDRANT_URL`` through ``qdrant-client``, one
  collection per version and the alias ``<collection_prefix>`` naming the current one.

Everything above the backend (chunk ids, payloads, BM25 weights, versions, the atomic
publish, fusion choice) is the same for both: ``ingest/store.py`` writes points through an
``IndexWriter`` and ``retrieval/search.py`` asks an ``IndexReader`` for an ``IndexQuery``.

Example::

    backend = get_backend(settings)
    writer = backend.create(version_path, IndexSpec(name="guides_v1", dim=384, n_points=2, dense_index="exact"))
    writer.add([IndexPoint(id=cid, dense=vec, sparse=(idx, vals), payload=payload), ...])
    info = writer.finish()                         # recorded in meta.json under "index"
    reader = backend.open(version_path, info)
    hits = reader.query(IndexQuery(mode="hybrid", limit=10, dense=qvec, sparse=(qi, qv)))
"""

from __future__ import annotations

from .base import (BACKEND_NAMES, INDEX_FORMAT, IndexBackend, IndexBackendError, IndexHit, IndexPoint, IndexQuery,
                   IndexReader, IndexSpec, IndexWriter)

__all__ = ["BACKEND_NAMES", "INDEX_FORMAT", "IndexBackend", "IndexBackendError", "IndexHit", "IndexPoint", "IndexQuery",
           "IndexReader", "IndexSpec", "IndexWriter", "get_backend"]


def get_backend(settings, **kwargs) -> IndexBackend:
    """The backend the settings name (``settings.index_backend_name``)."""
    name = settings.index_backend_name
    if name == "embedded":
        from .edge import EdgeBackend

        return EdgeBackend(settings, **kwargs)
    if name == "server":
        from .server import ServerBackend

        return ServerBackend(settings, **kwargs)
    raise IndexBackendError(f"Unknown index backend {name!r}. Supported backends are: {list(BACKEND_NAMES)}")
