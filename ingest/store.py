"""Versioned Qdrant index: each ingest builds a new version, then one atomic rename publishes it.

Layout under ``<data_dir>/index``::

    CURRENT                      {"version": "<vid>"}  (replaced atomically)
    versions/<vid>/meta.json     settings fingerprint, file hashes, BM25 statistics, timings
    versions/<vid>/chunks.jsonl  every chunk's payload, in index order
    versions/<vid>/vectors.npy   the dense vectors (reused by the next ingest for unchanged chunks)
    versions/<vid>/qdrant/       embedded Qdrant storage (absent when QDRANT_URL is set)
    versions/<vid>.partial/      a version being built: never read by searches

An interrupted ingest leaves only a ``.partial`` folder behind, so searches keep using the
previous version. Because each version has its own embedded-Qdrant folder, an ingest never
needs the folder that a running app holds open.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guides_qa.config import Settings

from .chunker import Chunk


class IndexError_(RuntimeError):
    """Base for index problems; the message says what to do."""


class IndexMissingError(IndexError_):
    pass


class IndexLockedError(IndexError_):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass
class Version:
    """One published index version."""
    vid: str
    path: Path
    meta: dict

    def chunks(self) -> list[Chunk]:
        with open(self.path / "chunks.jsonl", encoding="utf-8") as f:
            return [Chunk.from_payload(json.loads(line)) for line in f if line.strip()]

    def vectors(self) -> np.ndarray:
        return np.load(self.path / "vectors.npy")


class IndexLayout:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.index_dir
        self.versions = self.root / "versions"

    # -- reading -------------------------------------------------------------
    def current_vid(self) -> str | None:
        try:
            return json.loads((self.root / "CURRENT").read_text())["version"]
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, KeyError) as e:
            raise IndexError_(f"{self.root / 'CURRENT'} is damaged ({e}); run `guides ingest --rebuild`.") from e

    def current(self) -> Version | None:
        vid = self.current_vid()
        if vid is None:
            return None
        path = self.versions / vid
        try:
            meta = json.loads((path / "meta.json").read_text())
        except FileNotFoundError as e:
            raise IndexMissingError(
                f"The index points at version {vid}, but {path} is missing; run `guides ingest --rebuild`."
            ) from e
        return Version(vid, path, meta)

    def require_current(self) -> Version:
        v = self.current()
        if v is None:
            raise IndexMissingError(
                f"No index found under {self.root}. Build it with `guides ingest` (or `make run`)."
            )
        if not v.meta.get("n_chunks"):
            raise IndexMissingError(
                f"The index under {self.root} is empty: no guide could be indexed. Add .md/.txt guides to "
                f"{self.settings.guides_dir} and run `guides ingest`."
            )
        return v

    def collection_name(self, vid: str) -> str:
        return f"{self.settings.collection_prefix}_{vid}"

    # -- writing -------------------------------------------------------------
    def new_vid(self) -> str:
        return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}-{time.time_ns() % 1_000_000:06d}"

    def partial_path(self, vid: str) -> Path:
        return self.versions / f"{vid}.partial"

    def publish(self, vid: str) -> Path:
        """Rename the finished ``.partial`` folder and point CURRENT at it (both atomic)."""
        final = self.versions / vid
        os.replace(self.partial_path(vid), final)
        _fsync_dir(self.versions)
        write_atomic(self.root / "CURRENT", json.dumps({"version": vid}).encode())
        return final

    @contextmanager
    def ingest_lock(self):
        """One ingest at a time per index folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        f = open(self.root / ".ingest.lock", "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexLockedError(
                    f"Another `guides ingest` is already updating {self.root}. Wait for it to finish "
                    f"(searches keep using the current index meanwhile), then run again if needed."
                ) from None
            yield
        finally:
            f.close()

    def cleanup(self, keep: int = 2) -> list[str]:
        """Remove stale ``.partial`` folders and old versions that no process holds open."""
        removed = []
        if not self.versions.is_dir():
            return removed
        cur = self.current_vid()
        finals = sorted(p for p in self.versions.iterdir() if p.is_dir() and not p.name.endswith(".partial"))
        old = [p for p in finals if p.name != cur][: max(0, len(finals) - keep)]
        partials = [p for p in self.versions.iterdir() if p.name.endswith(".partial")]
        for p in partials + old:
            if _held_open(p / "qdrant"):
                continue
            if self.settings.qdrant_url and not p.name.endswith(".partial"):
                drop_server_collection(self.settings, self.collection_name(p.name))
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
        return removed


def _held_open(qdrant_path: Path) -> bool:
    """True when an embedded Qdrant client holds this folder (its .lock is flocked)."""
    lock = qdrant_path / ".lock"
    if not lock.exists():
        return False
    with open(lock, "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def open_qdrant(settings: Settings, version_path: Path):
    """A Qdrant client for one version: the server at QDRANT_URL, else embedded at <version>/qdrant."""
    from qdrant_client import QdrantClient

    if settings.qdrant_url:
        try:
            return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=30)
        except Exception as e:  # noqa: BLE001
            raise IndexError_(f"Cannot reach Qdrant at QDRANT_URL={settings.qdrant_url}: {e}") from e
    path = version_path / "qdrant"
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as e:
        if "already accessed" in str(e):
            raise IndexLockedError(
                f"The embedded index at {path} is open in another process. Embedded Qdrant allows one "
                f"process per folder: stop the other process (e.g. the app) or ask through it, or run a "
                f"Qdrant server and set QDRANT_URL."
            ) from None
        raise


def drop_server_collection(settings: Settings, name: str) -> None:
    client = open_qdrant(settings, Path("."))
    try:
        if client.collection_exists(name):
            client.delete_collection(name)
    finally:
        client.close()
