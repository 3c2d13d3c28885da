"""HNSW at the default settings keeps recall@10 >= 0.98 against exact search on real MiniLM vectors."""

from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from eval.hnsw_recall import guide_sentences, measure

REAL_GUIDES = Path(__file__).resolve().parents[2] / "data" / "guides"


def test_guide_sentences_are_real_and_distinct():
    s = guide_sentences(REAL_GUIDES)
    assert len(s) > 1500 and len({x.lower() for x in s}) == len(s)
    assert all(25 <= len(x) <= 400 for x in s)


@pytest.mark.slow
def test_hnsw_recall_at_default_settings(real_embedder):
    d = Settings()
    sents = guide_sentences(REAL_GUIDES)
    order = np.random.default_rng(0).permutation(len(sents))
    vecs = real_embedder.embed(sents, batch_size=64)
    got = measure(vecs[order[200:]], vecs[order[:200]], efs=(d.hnsw_ef,), m=d.hnsw_m, ef_construct=d.hnsw_ef_construct)
    assert got[d.hnsw_ef][0] >= 0.98
