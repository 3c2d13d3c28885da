"""`guides bench-index`: how the index scales, measured through the project's own store and search code.

Builds a synthetic index of N chunks with the project's exact schema (384-d dense vector,
BM25 sparse vector with the project's weights, the chunk payload) in a temporary folder
with ``ingest.store`` (the same code ``guides ingest`` runs), then opens it in a fresh
process and runs hybrid queries through ``retrieval.search.HybridSearcher`` (the same
code the app runs). Prints build seconds, open seconds, the query process's resident
memory and the query latency p50 / p95.

Example::

    guides bench-index --points 10000 --json
    # {"build_s": 4.1, "open_s": 0.05, "rss_mb": 160.2, "p50_ms": 2.1, "p95_ms": 4.0}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

DIM = 384
KEYS = ("build_s", "open_s", "rss_mb", "p50_ms", "p95_ms")


class BenchEmbedder:
    """Deterministic stand-in for MiniLM: a unit vector seeded by the text (no model, no cost)."""
    name = "fake:bench"
    dim = DIM
    max_tokens = 256

    def embed(self, texts, *, progress=False, batch_size=32):
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    def count_tokens(self, texts):
        return [len(t.split()) + 2 for t in texts]


def _vocabulary(rng: np.random.Generator, size: int = 30_000) -> list[str]:
    """Real words of the guides first (most frequent first), then made-up terms: a Zipf-like vocabulary."""
    from ingest.reader import find_guides

    words: dict[str, int] = {}
    root = Path(__file__).resolve().parent.parent / "data" / "guides"
    for p in find_guides(root) if root.is_dir() else []:
        for w in p.read_text(errors="ignore").lower().split():
            w = "".join(ch for ch in w if ch.isalnum())
            if w:
                words[w] = words.get(w, 0) + 1
    vocab = sorted(words, key=words.get, reverse=True)[:size]
    return vocab + [f"term{i}" for i in range(size - len(vocab))]


def synthetic_chunks(n: int, seed: int = 0):
    """``n`` chunks shaped like the guides' (a section path, ~80 words, line ranges) and unit vectors."""
    from core.types import Chunk

    rng = np.random.default_rng(seed)
    vocab = np.array(_vocabulary(rng))
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks**1.07
    p /= p.sum()
    lengths = rng.integers(25, 180, size=n)
    words = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
    chunks, at = [], 0
    for i in range(n):
        text = " ".join(vocab[words[at : at + lengths[i]]])
        at += lengths[i]
        g = i // 2000
        chunks.append(Chunk(guide=f"guide-{g:04d}.md", guide_title=f"Guide {g}",
                            section_path=[f"Section {i // 20 % 100}", f"Topic {i % 20}"],
                            start=1 + (i % 2000) * 10, end=9 + (i % 2000) * 10, text=text,
                            top=i // 20 % 100, n_tokens=int(lengths[i] * 1.3), ordinal=i, kinds=["paragraph"]))
    vecs = rng.standard_normal((n, DIM), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return chunks, vecs, [" ".join(vocab[rng.choice(len(vocab), size=rng.integers(3, 9), p=p)]) for _ in range(400)]


def _settings(data_dir: Path):
    from core.settings import load_settings

    return load_settings(data_dir=data_dir, guides_dir=data_dir, embed_model=BenchEmbedder.name,
                         reranker="off", llm="fake")


def build(data_dir: Path, n: int, *, progress: bool = False) -> tuple[float, list[str]]:
    """Write and publish a synthetic version; return (seconds, the query texts)."""
    from core.text import tokenize
    from ingest.bm25 import BM25Encoder
    from ingest.store import IndexLayout, index_spec, start_version, write_index

    chunks, vecs, queries = synthetic_chunks(n)
    s = _settings(data_dir)
    layout = IndexLayout(s)
    t0 = time.perf_counter()
    bm25 = BM25Encoder.fit((tokenize(c.embed_text) for c in chunks), k1=s.bm25_k1, b=s.bm25_b, epsilon=s.bm25_epsilon)
    vid = layout.new_vid()
    path = start_version(layout, vid)
    spec = index_spec(s, layout.collection_name(vid), DIM, n)
    info = write_index(layout.backend, path, spec, chunks, vecs, bm25, progress=progress)
    layout.commit(vid, {"version": vid, "embed_model": BenchEmbedder.name, "dim": DIM, "n_chunks": n,
                        "bm25": bm25.to_dict(), "collection": spec.name, "index": info})
    return time.perf_counter() - t0, queries


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def query(data_dir: Path, queries: list[str], n_queries: int) -> dict:
    """Open the published version and time hybrid queries (run in a fresh process)."""
    from retrieval.search import HybridSearcher, IndexHandle

    s = _settings(data_dir)
    t0 = time.perf_counter()
    handle = IndexHandle(s)
    handle.refresh()
    open_s = time.perf_counter() - t0
    searcher = HybridSearcher(s, embedder=BenchEmbedder(), index=handle)
    searcher.search(queries[0])                     # warm-up, not counted
    ms = []
    for i in range(n_queries):
        t = time.perf_counter()
        hits, _ = searcher.search(queries[1 + i % (len(queries) - 1)], mode="hybrid")
        ms.append((time.perf_counter() - t) * 1000)
        if not hits:
            raise RuntimeError("a benchmark query found nothing; the synthetic index is broken")
    rss = _rss_mb()
    handle.close()
    return {"open_s": open_s, "rss_mb": rss, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95))}


def describe(n: int) -> str:
    """Which backend and dense search a benchmark of ``n`` points uses, for the printed report."""
    import tempfile as _t

    s = _settings(Path(_t.gettempdir()))
    from ingest.store import index_spec

    spec = index_spec(s, "", DIM, n)
    dense = "exact" if spec.dense_index == "exact" else f"HNSW (m={spec.hnsw_m}, ef_construct={spec.hnsw_ef_construct}, hnsw_ef={s.hnsw_ef})"
    return (f"{n} chunks, index backend {s.index_backend_name}, dense search {dense} "
            f"(dense_exact_max_points={s.dense_exact_max_points}), fusion {s.fusion}, prefetch {s.prefetch_limit}, top {s.top_k}")


def run_bench(n: int, *, n_queries: int = 200, progress: bool = False) -> dict:
    """Build in this process, query in a fresh one (so its memory is the index's, not the build's)."""
    if n < 1:
        raise ValueError(f"--points must be at least 1, got {n}")
    with tempfile.TemporaryDirectory(prefix="guides-bench-") as tmp:
        data_dir = Path(tmp)
        build_s, queries = build(data_dir, n, progress=progress)
        (data_dir / "queries.json").write_text(json.dumps(queries))
        repo = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        out = subprocess.run([sys.executable, "-m", "eval.bench_index", "--query-only", str(data_dir), str(n_queries)],
                             capture_output=True, text=True, env=env, cwd=repo)
        if out.returncode != 0:
            raise RuntimeError(f"The query process failed:\n{out.stderr.strip()[-2000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"build_s": build_s, **{k: got[k] for k in KEYS[1:]}}


if __name__ == "__main__":           # the query half, run by run_bench in a fresh process
    if len(sys.argv) == 4 and sys.argv[1] == "--query-only":
        d = Path(sys.argv[2])
        print(json.dumps(query(d, json.loads((d / "queries.json").read_text()), int(sys.argv[3]))))
    else:
        sys.exit("usage: guides bench-index --points N [--json]")
