"""The backend interface and the value types both backends share (see ``ingest/backends/__init__.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

# Bump when what a backend writes changes incompatibly; an index with another format is rebuilt once.
INDEX_FORMAT = 2
BACKEND_NAMES: tuple[str, ...] = ("embedded", "server")


class IndexBackendError(RuntimeError):
    """A backend problem; the message says what to do."""


@dataclass(frozen=True)
class IndexSpec:
    """What a new version's index will hold."""
    name: str                                   # collection name (server) / label (embedded)
    dim: int
    n_points: int
    dense_index: Literal["exact", "hnsw"]       # build an HNSW graph for the dense vectors or not
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100


@dataclass
class IndexPoint:
    """One chunk as the index stores it."""
    id: str                                     # the chunk id (a UUID string)
    dense: list[float]
    sparse: tuple[list[int], list[float]]       # BM25 document weights
    payload: dict


@dataclass
class IndexQuery:
    """A query in the backend-neutral form; each backend translates it to its own API."""
    mode: Literal["hybrid", "dense", "bm25"]
    limit: int
    dense: list[float] | None = None
    sparse: tuple[list[int], list[float]] | None = None
    prefetch_limit: int = 40
    fusion: Literal["dbsf", "rrf"] = "dbsf"
    rrf_k: int = 60
    exact: bool = True                          # dense: brute force (True) or the HNSW graph
    hnsw_ef: int | None = None


@dataclass
class IndexHit:
    payload: dict
    score: float


class IndexWriter(Protocol):
    def add(self, points: Sequence[IndexPoint]) -> None:
        """Store a batch of points."""

    def finish(self) -> dict:
        """Make the index complete and durable; return what meta.json records under "index"."""

    def close(self) -> None:
        """Release the writer (also after a failure)."""


class IndexReader(Protocol):
    def query(self, q: IndexQuery) -> list[IndexHit]:
        """Ranked hits, best first, with payloads."""

    def close(self) -> None:
        """Release the reader."""


class IndexBackend(Protocol):
    name: str

    def create(self, version_path: Path, spec: IndexSpec) -> IndexWriter:
        """A writer for a new, unpublished version."""

    def open(self, version_path: Path, info: dict) -> IndexReader:
        """A reader for a published version (``info``: what ``finish`` returned)."""

    def publish(self, info: dict) -> None:
        """Called right before the version becomes CURRENT (server: move the alias)."""

    def drop(self, version_path: Path, info: dict) -> None:
        """Remove what the backend keeps outside the version folder (server: the collection)."""
