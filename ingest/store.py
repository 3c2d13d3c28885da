"""Versioned index: each ingest builds a new version, then one atomic rename publishes it.

Layout under ``<data_dir>/index``::

    CURRENT                      {"version": "<vid>"}  (replaced atomically)
    versions/<vid>/meta.json     settings fingerprint, file hashes, BM25 statistics, index info, timings
    versions/<vid>/chunks.jsonl  every chunk's payload, in index order
    versions/<vid>/vectors.npy   the dense vectors (reused by the next ingest for unchanged chunks)
    versions/<vid>/shard/        the embedded engine's shard (qdrant-edge; absent with the server backend)
    versions/<vid>/practice.jsonl  the practice question bank (ingest/bank.py)
    versions/<vid>/manifest.json every file above with its size and sha256, written last (ingest/manifest.py)
    versions/<vid>/.readers      reader lease: every process that has the version open holds a shared flock
    versions/<vid>.damaged/      a version `guides ingest` found damaged and replaced, kept until the next cleanup
    versions/<vid>.partial/      a version being built: never read by searches

An interrupted ingest leaves only a ``.partial`` folder behind, so searches keep using the
previous version. Nothing writes to a published version, so any number of processes read
it at once; ``cleanup`` removes an old version only when it can take the lease exclusively,
i.e. when no running process has it open (a crashed process's lock goes with it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.settings import Settings
from core.text import tokenize
from core.types import Chunk

from .backends import INDEX_FORMAT, IndexBackend, IndexPoint, IndexSpec, get_backend
from .bm25 import BM25Encoder
from .manifest import write_manifest

LEASE = ".readers"


class IndexError_(RuntimeError):
    """Base for index problems; the message says what to do."""


class IndexMissingError(IndexError_):
    pass


class IndexLockedError(IndexError_):
    pass


class IndexDamagedError(IndexError_):
    """A file of a published version cannot be read; the message names it and the fix."""


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
        path = self.path / "chunks.jsonl"
        out, n = [], 0
        try:
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        out.append(Chunk.from_payload(json.loads(line)))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            where = f"line {n + 1}" if isinstance(e, UnicodeDecodeError) else f"line {n}"
            raise IndexDamagedError(f"{path} is damaged near {where} ({type(e).__name__}). Run `guides check` to see "
                                    f"what else is, then `guides ingest` to rebuild the index from the guides.") from None
        return out

    def vectors(self) -> np.ndarray:
        return np.load(self.path / "vectors.npy")

    @property
    def index_info(self) -> dict:
        return self.meta.get("index") or {}

    def outdated_reason(self) -> str | None:
        """Why this version's index must be rebuilt before it can be searched with this code, or None."""
        if (self.path / "qdrant").is_dir() and not self.index_info:
            return ("it was written by qdrant-client's local mode (the embedded index before Qdrant's own engine, "
                    "qdrant-edge, replaced it)")
        if self.index_info.get("format") != INDEX_FORMAT:
            return f"its index format is {self.index_info.get('format')!r}, this code writes format {INDEX_FORMAT}"
        return None

    def backend_mismatch(self, settings: Settings) -> str | None:
        """Why this version cannot be served with these settings' backend, or None."""
        info = self.index_info
        want = settings.index_backend_name
        if info.get("backend") != want:
            return f"it was built for the {info.get('backend')!r} index backend, the settings now select {want!r}"
        if want == "server" and info.get("url") != settings.qdrant_url:
            return f"it was built for QDRANT_URL={info.get('url')!r}, QDRANT_URL is now {settings.qdrant_url!r}"
        return None


class Lease:
    """A shared flock on a version's lease file, held while a process has the version open."""

    def __init__(self, fd: int, vid: str):
        self.fd, self.vid = fd, vid

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)           # closing the descriptor drops the flock
            self.fd = None


class IndexLayout:
    def __init__(self, settings: Settings, *, backend: IndexBackend | None = None):
        self.settings = settings
        self.root = settings.index_dir
        self.versions = self.root / "versions"
        self._backend = backend

    @property
    def backend(self) -> IndexBackend:
        if self._backend is None:
            self._backend = get_backend(self.settings)
        return self._backend

    # -- reading -------------------------------------------------------------
    def current_vid(self) -> str | None:
        try:
            return json.loads((self.root / "CURRENT").read_text(encoding="utf-8"))["version"]
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise IndexError_(f"{self.root / 'CURRENT'} is damaged ({type(e).__name__}); run `guides ingest` to "
                              f"rebuild the index.") from None

    def current(self) -> Version | None:
        vid = self.current_vid()
        if vid is None:
            return None
        path = self.versions / vid
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise IndexMissingError(
                f"The index points at version {vid}, but {path} is missing; run `guides ingest --rebuild`."
            ) from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexDamagedError(f"{path / 'meta.json'} is damaged ({type(e).__name__}: {e}). Run `guides check` "
                                    f"to see what else is, then `guides ingest` to rebuild the index.") from None
        if not isinstance(meta, dict):
            raise IndexDamagedError(f"{path / 'meta.json'} is not an index version's metadata. Run `guides ingest` "
                                    "to rebuild the index.")
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

    def lease_current(self) -> tuple[Version, Lease]:
        """The current version with a reader lease on it, so no cleanup removes it while it is open."""
        for _ in range(20):
            v = self.require_current()
            lease = _take_shared(v.path / LEASE, v.vid)
            if lease is not None:
                return v, lease
            # Cleanup removed it between our reading CURRENT and taking the lease: CURRENT has moved on.
        raise IndexLockedError(f"Could not open the current index under {self.root}: it kept changing. Try again.")

    def collection_name(self, vid: str) -> str:
        return f"{self.settings.collection_prefix}_{vid}"

    # -- writing -------------------------------------------------------------
    def new_vid(self) -> str:
        """Names sort in creation order (cleanup keeps the newest): local time, nanoseconds, then the pid."""
        ns = time.time_ns()
        return time.strftime("%Y%m%dT%H%M%S", time.localtime(ns // 1_000_000_000)) + f"-{ns % 1_000_000_000:09d}-{os.getpid()}"

    def partial_path(self, vid: str) -> Path:
        return self.versions / f"{vid}.partial"

    def publish(self, vid: str) -> Path:
        """Rename the finished ``.partial`` folder and point CURRENT at it (both atomic)."""
        final = self.versions / vid
        os.replace(self.partial_path(vid), final)
        _fsync_dir(self.versions)
        write_atomic(self.root / "CURRENT", json.dumps({"version": vid}).encode())
        return final

    def commit(self, vid: str, meta: dict) -> Path:
        """Write the finished version's meta.json and its manifest (every file's size and sha256, last), then
        publish it (backend first, then CURRENT): the rename publishes the manifest with what it describes."""
        write_atomic(self.partial_path(vid) / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1).encode())
        write_manifest(self.partial_path(vid))
        self.backend.publish(meta.get("index") or {})
        return self.publish(vid)

    def set_aside(self, vid: str) -> Path:
        """Rename a damaged version to ``<vid>.damaged`` (kept for inspection; the next cleanup after this one
        removes it)."""
        src, dst = self.versions / vid, self.versions / f"{vid}.damaged"
        os.replace(src, dst)
        return dst

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

    def cleanup(self, keep: int = 2, *, keep_damaged: str | None = None) -> list[str]:
        """Remove stale ``.partial`` folders, damaged versions set aside earlier (but ``keep_damaged``), and all but
        the newest ``keep`` versions (the current one always stays), skipping any version a running process still
        holds open."""
        removed = []
        if not self.versions.is_dir():
            return removed
        cur = self.current_vid()
        finals = sorted(p for p in self.versions.iterdir()
                        if p.is_dir() and not p.name.endswith((".partial", ".trash", ".damaged")))
        old = [p for p in finals if p.name != cur][: max(0, len(finals) - keep)]
        partials = [p for p in self.versions.iterdir() if p.name.endswith(".partial")]
        partials += [p for p in self.versions.iterdir() if p.name.endswith(".damaged") and p.name != keep_damaged]
        trash = [p for p in self.versions.iterdir() if p.name.endswith(".trash")]
        for p in trash:
            shutil.rmtree(p, ignore_errors=True)
        for p in partials + old:
            if _held_open(p / "qdrant"):               # a qdrant-client local-mode reader from before the move
                continue
            lock = _take_exclusive(p / LEASE)
            if lock is False:
                continue                               # a running process has this version open
            try:
                self._drop_backend_data(p)
                gone = p.with_name(p.name + ".trash")
                os.replace(p, gone)                    # readers re-check the path after locking: they see it gone
                shutil.rmtree(gone, ignore_errors=True)
                removed.append(p.name)
            finally:
                if lock is not None:
                    os.close(lock)
        return removed

    def _drop_backend_data(self, path: Path) -> None:
        """Drop what the version's backend keeps outside the folder (a server collection)."""
        try:
            info = json.loads((path / "meta.json").read_text()).get("index") or {}
        except (FileNotFoundError, json.JSONDecodeError):
            info = {}
        if path.name.endswith(".partial") and self.settings.index_backend_name == "server":
            info = {"backend": "server", "collection": self.collection_name(path.name[: -len(".partial")])}
        if info.get("backend") == "server":
            if not self.settings.qdrant_url or info.get("url", self.settings.qdrant_url) != self.settings.qdrant_url:
                return                                 # another server, or none configured: leave its collection alone
            self.backend.drop(path, info)


def _take_shared(lease_path: Path, vid: str) -> Lease | None:
    """A shared lock on the lease file, or None when the version was removed meanwhile."""
    try:
        fd = os.open(lease_path, os.O_RDONLY)
    except FileNotFoundError:
        if lease_path.parent.is_dir() and not lease_path.exists():
            # A version published before leases existed: readers cannot lease it; it is rebuilt on the next ingest.
            return Lease(None, vid)
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        same = os.fstat(fd).st_ino == os.stat(lease_path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return Lease(fd, vid)


def _take_exclusive(lease_path: Path):
    """An exclusive non-blocking lock: its fd, None when there is no lease file, False when a reader holds it."""
    try:
        fd = os.open(lease_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return fd


def _held_open(qdrant_path: Path) -> bool:
    """True when a qdrant-client local-mode client holds this folder (its .lock is flocked)."""
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


def start_version(layout: IndexLayout, vid: str) -> Path:
    """Create the ``.partial`` folder of a new version, with its lease file."""
    path = layout.partial_path(vid)
    path.mkdir(parents=True)
    (path / LEASE).touch()
    return path


def index_spec(settings: Settings, name: str, dim: int, n_points: int) -> IndexSpec:
    """How a version of ``n_points`` chunks is indexed: exact dense search up to the threshold, HNSW above."""
    return IndexSpec(name=name, dim=dim, n_points=n_points,
                     dense_index="hnsw" if n_points > settings.dense_exact_max_points else "exact",
                     hnsw_m=settings.hnsw_m, hnsw_ef_construct=settings.hnsw_ef_construct)


def write_index(backend: IndexBackend, path: Path, spec: IndexSpec, chunks: list[Chunk], vectors: np.ndarray,
                bm25: BM25Encoder, *, doc_terms=None, batch: int = 256, progress: bool = True, note=None) -> dict:
    """Write every chunk (dense vector, BM25 weights, payload) through the backend; return its index info.

    ``doc_terms``: per chunk, its tokens (or a callable giving them), when the caller already tokenized.
    """
    note = note or (lambda stage, frac: None)
    writer = backend.create(path, spec)
    try:
        bar = tqdm(total=len(chunks), desc="Writing index", unit="chunk", disable=not progress, file=sys.stderr)
        t0 = time.perf_counter()
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            points = []
            for i, c in enumerate(part, start=start):
                toks = doc_terms(i) if callable(doc_terms) else (doc_terms[i] if doc_terms is not None else tokenize(c.embed_text))
                points.append(IndexPoint(id=c.chunk_id, dense=vectors[i].tolist(),
                                         sparse=bm25.encode_document(toks), payload=c.to_payload()))
            writer.add(points)
            bar.update(len(points))
            done = start + len(points)
            note(f"writing the index ({done}/{len(chunks)}{eta(t0, done, len(chunks))})",
                 0.75 + 0.15 * done / max(1, len(chunks)))
        bar.close()
        if spec.dense_index == "hnsw":
            print(f"Building the HNSW graph for {spec.n_points} chunks (dense_exact_max_points="
                  f"{getattr(backend.settings, 'dense_exact_max_points', '?')}); this takes a while", file=sys.stderr)
        note("optimizing the index", 0.9)
        return writer.finish()
    finally:
        writer.close()


def eta(t0: float, done: int, total: int) -> str:
    """', about 3 min left' from the rate so far ('' until there is a rate)."""
    el = time.perf_counter() - t0
    if done <= 0 or done >= total or el < 1:
        return ""
    left = el / done * (total - done)
    return f", about {left:.0f} s left" if left < 90 else f", about {left / 60:.0f} min left"
