"""The naive pipeline the issue compares against: fixed 200-word windows with 50% overlap,
rank-bm25 and MiniLM, fused by RRF (k=60) in Python. Used only as a reference in the eval."""

from __future__ import annotations

import re

import numpy as np
from rank_bm25 import BM25Okapi

from ingest.clean import clean_text
from ingest.reader import RawGuide


def windows(guides: list[RawGuide], size: int = 200, stride: int = 100) -> list[tuple[str, str]]:
    out = []
    for g in guides:
        words = clean_text(g.text)[0].split()
        for i, start in enumerate(range(0, max(1, len(words) - size + stride), stride)):
            out.append((f"{g.rel}#w{i}", " ".join(words[start : start + size])))
    return out


class NaiveHybrid:
    def __init__(self, passages: list[tuple[str, str]], embedder):
        self.passages = passages
        self.embedder = embedder
        self.bm25 = BM25Okapi([self._tok(t) for _, t in passages])
        self.vecs = embedder.embed([t for _, t in passages])

    @staticmethod
    def _tok(t: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", t.lower())

    def search(self, query: str, k: int = 10) -> list[tuple[str, str]]:
        bm = self.bm25.get_scores(self._tok(query))
        dn = self.vecs @ self.embedder.embed([query])[0]
        fused = np.zeros(len(self.passages))
        for scores in (bm, dn):
            for rank, idx in enumerate(np.argsort(-scores)[:100], start=1):
                fused[idx] += 1.0 / (60 + rank)
        return [self.passages[i] for i in np.argsort(-fused)[:k]]
