"""`guides ingest`: read, clean, chunk, embed and index the guides, incrementally by content hash.

Example::

    from core.settings import Settings
    from ingest.pipeline import run_ingest
    summary = run_ingest(Settings())
    print(summary.render())
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from core.settings import Settings, fingerprint_hash

from core.text import tokenize
from core.types import Chunk

from .bm25 import BM25Encoder
from .chunker import Chunker
from .embed import Embedder, load_embedder
from .reader import RawGuide, Skipped, find_guides, read_guide
from .backends import IndexBackend
from .store import IndexDamagedError, IndexError_, IndexLayout, eta, index_spec, start_version, write_index
from .bank import BANK_FILE, BANK_FORMAT, build_bank, write_bank
from .manifest import verify
from .structure import ParsedGuide, parse_guides

# Bump when cleaning, structure recovery or chunking code changes what chunks come out.
PIPELINE_VERSION = 4   # 4: markdown structure from markdown-it-py (thematic breaks dropped)
ProgressCb = Callable[[str, float], None]


@dataclass
class IngestSummary:
    files_read: int = 0
    files_skipped: list[str] = field(default_factory=list)
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0
    n_chunks: int = 0
    rebuild_reason: str | None = None
    index_rebuild_reason: str | None = None      # only the index is rewritten (vectors reused)
    nothing_changed: bool = False
    version: str | None = None
    token_stats: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    practice: dict = field(default_factory=dict)     # questions per guide in the practice bank (practice/bank.py)
    damaged: list[str] = field(default_factory=list)  # files of the previous version that failed their manifest

    def render(self) -> str:
        lines = []
        if self.damaged:
            lines.append("Repaired: the previous version was damaged (" + "; ".join(self.damaged) + ")")
        if self.rebuild_reason:
            lines.append(f"Full rebuild: {self.rebuild_reason}")
        elif self.index_rebuild_reason:
            lines.append(f"Rebuilding the index once (vectors reused, nothing re-embedded): {self.index_rebuild_reason}")
        skipped = len(self.files_skipped)
        lines.append(f"Files: {self.files_read} read, {skipped} skipped")
        for s in self.files_skipped:
            lines.append(f"  - {s}")
        if self.nothing_changed:
            lines.append(f"Nothing changed: index version {self.version} is up to date ({self.n_chunks} chunks); embedded 0.")
        else:
            lines.append(
                f"Chunks: {self.added} added, {self.updated} updated, {self.removed} removed, "
                f"{self.unchanged} unchanged ({self.n_chunks} total; {self.embedded} embedded)"
            )
            if self.token_stats:
                t = self.token_stats
                lines.append(f"Chunk size (word-pieces incl. heading context): min {t['min']}, median {t['median']}, max {t['max']} (window {t['window']})")
            lines.append(f"Index version: {self.version}")
        if self.practice:
            lines.append(f"Practice bank: {sum(self.practice.values())} questions ("
                         + ", ".join(f"{g} {n}" for g, n in self.practice.items()) + ")")
        lines.append("Seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


class _Timer:
    def __init__(self, summary: IngestSummary):
        self.s = summary

    def stage(self, name: str):
        t0 = time.perf_counter()
        s = self.s

        class _Ctx:
            def __enter__(self_):
                return self_

            def __exit__(self_, *exc):
                s.seconds[name] = s.seconds.get(name, 0.0) + time.perf_counter() - t0

        return _Ctx()


def _fingerprint(settings: Settings) -> dict:
    return {**settings.chunking_fingerprint(), "pipeline_version": PIPELINE_VERSION}


def _rebuild_reason(old: dict, new: dict) -> str | None:
    diffs = [f"{k} changed from {old.get(k)!r} to {new[k]!r}" for k in sorted(new) if old.get(k) != new[k]]
    return "; ".join(diffs) if diffs else None


def _read_all(settings: Settings, summary: IngestSummary, progress: bool) -> list[RawGuide]:
    root = settings.guides_dir
    guides = []
    for path in tqdm(find_guides(root), desc="Reading guides", unit="file", disable=not progress, file=sys.stderr):
        r = read_guide(path, root)
        if isinstance(r, Skipped):
            summary.files_skipped.append(r.message())
            print(f"warning: {r.message()}", file=sys.stderr)
        else:
            guides.append(r)
    summary.files_read = len(guides)
    return guides


def chunk_guides(guides: list[ParsedGuide], chunker: Chunker, summary: IngestSummary | None = None) -> list[Chunk]:
    chunks: list[Chunk] = []
    for g in guides:
        got = chunker.chunk(g.structure, g.rel)
        if not got and summary is not None:
            summary.files_skipped.append(Skipped(g.rel, "has no indexable text after cleaning").message())
        chunks.extend(got)
    return chunks


def run_ingest(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    rebuild: bool = False,
    progress: bool = True,
    on_stage: ProgressCb | None = None,
    backend: IndexBackend | None = None,
) -> IngestSummary:
    """Bring the index in line with the guides folder. Safe to interrupt at any point."""
    summary = IngestSummary()
    timer = _Timer(summary)
    layout = IndexLayout(settings, backend=backend)
    t_total = time.perf_counter()
    note = on_stage or (lambda stage, frac: None)

    with layout.ingest_lock():
        with timer.stage("read"):
            note("reading guides", 0.0)
            guides = _read_all(settings, summary, progress)
        fp = _fingerprint(settings)
        files = {g.rel: g.sha256 for g in guides}
        damaged_vid = None
        try:
            current = layout.current()
        except IndexDamagedError as e:           # meta.json unreadable: nothing of the version can be trusted
            current, damaged_vid = None, layout.current_vid()
            summary.damaged = [str(e).split(". Run", 1)[0]]
            rebuild = True
        except IndexError_ as e:                 # CURRENT unreadable: build afresh
            current = None
            summary.damaged = [str(e).split("; run", 1)[0]]
            rebuild = True
        old_meta = current.meta if current else None

        if current is not None:
            # What the version's files should contain (its manifest): a damaged version is never "up to date".
            t_check = time.perf_counter()
            damage = [d for d in verify(current.path) if not d.problem.startswith("missing: the version was written")]
            summary.seconds["check"] = time.perf_counter() - t_check
            if damage:
                summary.damaged = [f"{d.file}: {d.problem}" for d in damage]
                damaged_vid = current.vid
                if not {"vectors.npy", "chunks.jsonl"}.isdisjoint({d.file for d in damage}):
                    rebuild = True               # nothing of it is reused
        if summary.damaged:
            print("The index is damaged: " + "; ".join(summary.damaged) + ". Building a new version from the guides"
                  + (f"; the damaged one is kept as {damaged_vid}.damaged until the next ingest." if damaged_vid
                     else "."), file=sys.stderr)
        if old_meta and not rebuild:
            reason = _rebuild_reason(old_meta.get("fingerprint", {}), fp)
            index_reason = _index_rebuild_reason(settings, current)
            if damaged_vid is not None and index_reason is None:
                index_reason = "the current version is damaged (its chunks and vectors are intact and reused)"
            if reason is None and old_meta.get("files") == files and index_reason is None:
                summary.nothing_changed = True
                summary.version = current.vid
                summary.n_chunks = old_meta.get("n_chunks", 0)
                layout.cleanup()
                summary.seconds["total"] = time.perf_counter() - t_total
                note("done", 1.0)
                return summary
            summary.rebuild_reason = reason
            if reason is None and index_reason is not None:
                summary.index_rebuild_reason = index_reason
                print(f"Rebuilding the index once: {index_reason}. Vectors are reused.", file=sys.stderr)
        elif rebuild and summary.damaged:
            summary.rebuild_reason = "the index is damaged"
        elif rebuild:
            summary.rebuild_reason = "requested with --rebuild"

        with timer.stage("load_model"):
            note("loading the embedding model", 0.05)
            embedder = embedder or load_embedder(settings.embed_model)
        max_tokens = min(settings.chunk_max_tokens, embedder.max_tokens)
        chunker = Chunker(counter=embedder.count_tokens, max_tokens=max_tokens,
                          target_tokens=min(settings.chunk_target_tokens, max_tokens),
                          min_tokens=settings.chunk_min_tokens)
        with timer.stage("chunk"):
            note("cleaning and chunking", 0.1)
            parsed = parse_guides(guides)          # cleaned and parsed once: the chunks and the practice bank
            chunks = chunk_guides(parsed, chunker, summary)
        _check_unique_ids(chunks)

        # Reuse vectors of identical chunks from the previous version (same fingerprint only).
        old_by_id: dict[str, str] = {}
        reuse: dict[str, np.ndarray] = {}
        if current is not None and not (summary.damaged and summary.rebuild_reason):
            old_chunks = current.chunks()
            old_by_id = {c.chunk_id: c.content_hash for c in old_chunks}
            if summary.rebuild_reason is None:
                vecs = current.vectors()
                reuse = {c.content_hash: vecs[i] for i, c in enumerate(old_chunks)}
        new_ids = {c.chunk_id for c in chunks}
        for c in chunks:
            if c.chunk_id not in old_by_id:
                summary.added += 1
            elif old_by_id[c.chunk_id] != c.content_hash:
                summary.updated += 1
            else:
                summary.unchanged += 1
        summary.removed = sum(1 for cid in old_by_id if cid not in new_ids)

        with timer.stage("embed"):
            todo = [i for i, c in enumerate(chunks) if c.content_hash not in reuse]
            vectors = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
            for i, c in enumerate(chunks):
                if c.content_hash in reuse:
                    vectors[i] = reuse[c.content_hash]
            bs = settings.embed_batch_size
            bar = tqdm(total=len(todo), desc="Embedding chunks", unit="chunk", disable=not progress, file=sys.stderr)
            t_embed = time.perf_counter()
            for start in range(0, len(todo), bs):       # one batch in memory at a time
                idx = todo[start : start + bs]
                vectors[idx] = embedder.embed([chunks[i].embed_text for i in idx], batch_size=bs)
                bar.update(len(idx))
                done = start + len(idx)
                note(f"embedding ({done}/{len(todo)} chunks{eta(t_embed, done, len(todo))})",
                     0.15 + 0.55 * done / max(1, len(todo)))
            bar.close()
            summary.embedded = len(todo)

        with timer.stage("bm25"):
            # Statistics in one streaming pass; documents are tokenized again (stems cached) as they are written.
            bm25 = BM25Encoder.fit((tokenize(c.embed_text) for c in chunks),
                                   k1=settings.bm25_k1, b=settings.bm25_b, epsilon=settings.bm25_epsilon)

        vid = layout.new_vid()
        with timer.stage("index"):
            note("writing the index", 0.75)
            path = start_version(layout, vid)
            spec = index_spec(settings, layout.collection_name(vid), embedder.dim, len(chunks))
            index_info = _write_index(layout.backend, path, spec, chunks, vectors, bm25, progress, note)
            with open(path / "chunks.jsonl", "w", encoding="utf-8") as f:
                for c in chunks:
                    f.write(json.dumps(c.to_payload(), ensure_ascii=False) + "\n")
            np.save(path / "vectors.npy", vectors)
            # The practice bank: the guides' own questions, published with the index in the same atomic step.
            bank = build_bank(parsed)
            write_bank(path / BANK_FILE, bank)
            summary.practice = {rel: sum(e.guide == rel for e in bank) for rel in files}
            sizes = [c.n_tokens for c in chunks]
            summary.token_stats = (
                {"min": min(sizes), "median": int(statistics.median(sizes)), "max": max(sizes), "window": max_tokens}
                if sizes else {}
            )
            summary.n_chunks = len(chunks)
            meta = {
                "version": vid,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "fingerprint": fp,
                "fingerprint_hash": fingerprint_hash(fp),
                "embed_model": settings.embed_model,
                "dim": embedder.dim,
                "files": files,
                "guides": _guide_table(chunks, files),
                "skipped": summary.files_skipped,
                "n_chunks": len(chunks),
                "token_stats": summary.token_stats,
                "bm25": bm25.to_dict(),
                "qdrant_url": settings.qdrant_url,
                "collection": layout.collection_name(vid),
                "index": index_info,
                "practice": {"file": BANK_FILE, "questions": len(bank), "by_guide": summary.practice,
                             "format": BANK_FORMAT},
            }
        # The timings go into meta.json for the eval report, before publishing: nothing writes to a published version.
        summary.seconds["total"] = time.perf_counter() - t_total
        meta["seconds"] = dict(summary.seconds)
        layout.commit(vid, meta)
        summary.version = vid
        if damaged_vid is not None:
            try:
                layout.set_aside(damaged_vid)
            except OSError as e:           # e.g. a reader still has it open on a filesystem that forbids the rename
                print(f"Could not set the damaged version aside ({e}); the next ingest removes it.", file=sys.stderr)
        layout.cleanup(keep_damaged=f"{damaged_vid}.damaged" if damaged_vid else None)
        summary.seconds["total"] = time.perf_counter() - t_total
        note("done", 1.0)
    return summary


def _guide_table(chunks: list[Chunk], files: dict[str, str]) -> dict:
    out: dict[str, dict] = {rel: {"title": rel, "chunks": 0} for rel in files}
    for c in chunks:
        out[c.guide] = {"title": c.guide_title, "chunks": out.get(c.guide, {}).get("chunks", 0) + 1}
    return out


def _check_unique_ids(chunks: list[Chunk]) -> None:
    seen: dict[str, Chunk] = {}
    for c in chunks:
        if c.chunk_id in seen:
            raise RuntimeError(f"Two chunks got the same id in {c.guide} › {c.section} (lines {c.start}-{c.end}); this is a bug.")
        seen[c.chunk_id] = c


def _index_rebuild_reason(settings: Settings, current) -> str | None:
    """Why the current version's index must be rewritten although its chunks are unchanged, or None."""
    why = current.outdated_reason() or current.backend_mismatch(settings)
    if why:
        return why
    if (current.meta.get("practice") or {}).get("format") != BANK_FORMAT:
        return "the version has no practice question bank of the current format"
    info = current.index_info
    want = index_spec(settings, "", info.get("dim", 0), current.meta.get("n_chunks", 0))
    if info.get("dense_index") != want.dense_index:
        return (f"dense search for {want.n_points} chunks is now {want.dense_index!r} (dense_exact_max_points="
                f"{settings.dense_exact_max_points}), the index was built for {info.get('dense_index')!r}")
    if want.dense_index == "hnsw" and (info.get("hnsw_m"), info.get("hnsw_ef_construct")) != (want.hnsw_m, want.hnsw_ef_construct):
        return "hnsw_m or hnsw_ef_construct changed"
    return None


def _write_index(backend, path, spec, chunks, vectors, bm25, progress, note) -> dict:
    return write_index(backend, path, spec, chunks, vectors, bm25, progress=progress, note=note)
