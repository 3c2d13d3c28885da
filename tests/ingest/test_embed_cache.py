"""CachedEmbedder: the same vectors as the embedder it wraps, each new text embedded once, a bounded memory."""

import numpy as np
import pytest

from ingest.embed import CachedEmbedder, HashEmbedder


class Counting(HashEmbedder):
    def __init__(self):
        super().__init__()
        self.calls: list[list[str]] = []

    def embed(self, texts, *, progress=False, batch_size=32):
        self.calls.append(list(texts))
        return super().embed(texts, progress=progress, batch_size=batch_size)


def test_same_vectors_as_the_wrapped_embedder_in_the_callers_order():
    inner = Counting()
    cached = CachedEmbedder(inner)
    texts = ["what is lora?", "LoRA adds low-rank matrices.", "what is lora?"]
    np.testing.assert_array_equal(cached.embed(texts), HashEmbedder().embed(texts))
    assert cached.embed([]).shape == (0, inner.dim)
    assert (cached.name, cached.dim, cached.max_tokens) == (inner.name, inner.dim, inner.max_tokens)


def test_only_texts_not_seen_before_are_embedded_once_each_in_one_batch():
    inner = Counting()
    cached = CachedEmbedder(inner)
    cached.embed(["a b", "c d", "a b"])
    cached.embed(["c d", "e f", "a b", "e f"])
    assert inner.calls == [["a b", "c d"], ["e f"]]
    cached.embed(["a b", "e f"])
    assert len(inner.calls) == 2


def test_least_recently_used_texts_are_dropped_beyond_its_size():
    inner = Counting()
    cached = CachedEmbedder(inner, size=2)
    cached.embed(["one", "two"])
    cached.embed(["one"])            # "one" is now the most recent
    cached.embed(["three"])          # drops "two"
    cached.embed(["one", "two"])
    assert inner.calls[-1] == ["two"]
    with pytest.raises(ValueError, match="at least 1"):
        CachedEmbedder(inner, size=0)
