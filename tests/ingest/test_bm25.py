import numpy as np
from rank_bm25 import BM25Okapi

from core.text import tokenize
from ingest.bm25 import BM25Encoder, term_id

DOCS = [
    "LoRA trains low-rank adapters while the base weights stay frozen",
    "QLoRA quantizes the frozen base model to 4-bit and trains LoRA adapters",
    "The KV cache stores keys and values of past tokens",
    "Attention scores are scaled by the square root of the key dimension",
    "Beam search keeps several candidate sequences",
    "Temperature sampling rescales logits before the softmax",
]


def test_tokenize_stems_and_drops_stopwords():
    assert tokenize("What are the Adapters training?") == ["adapt", "train"]
    assert tokenize("") == []


def sparse_dot(q, d):
    dq = dict(zip(*q))
    return sum(dq.get(i, 0.0) * v for i, v in zip(*d))


def test_scores_equal_rank_bm25():
    toks = [tokenize(d) for d in DOCS]
    enc = BM25Encoder.fit(toks)
    ref = BM25Okapi(toks)
    for query in ["lora adapters frozen", "kv cache keys", "softmax temperature logits", "frozen frozen base"]:
        q = tokenize(query)
        ours = [sparse_dot(enc.encode_query(q), enc.encode_document(t)) for t in toks]
        np.testing.assert_allclose(ours, ref.get_scores(q), rtol=1e-9, atol=1e-12)


def test_unknown_query_terms_are_dropped_and_roundtrip():
    enc = BM25Encoder.fit([tokenize(d) for d in DOCS])
    assert enc.encode_query(["zzzunknown"]) == ([], [])
    again = BM25Encoder.from_dict(enc.to_dict())
    assert again.idf == enc.idf


def test_term_ids_are_crc32_so_the_same_in_every_process():
    # Known values: an id from Python's salted hash() (different in every process) would not match
    # the ids already stored in an index, and BM25 queries would silently find nothing.
    assert [term_id(t) for t in ("lora", "qlora", "attent")] == [881021184, 391622782, 2020603487]
    assert term_id("") == 0 and 0 <= term_id("zzzz-\u00e9") < 2**32


def test_term_ids_do_not_collide_over_the_real_guides_vocabulary():
    from pathlib import Path

    guides = Path(__file__).resolve().parents[2] / "data" / "guides"
    vocab = {t for p in sorted(guides.iterdir()) if p.suffix in (".md", ".txt") for t in tokenize(p.read_text())}
    assert len(vocab) > 2000
    ids = {term_id(t) for t in vocab}
    assert len(ids) == len(vocab), f"{len(vocab) - len(ids)} term ids collide"


def test_qdrant_ranking_matches_rank_bm25():
    from qdrant_client import QdrantClient, models

    toks = [tokenize(d) for d in DOCS]
    enc = BM25Encoder.fit(toks)
    client = QdrantClient(":memory:")
    client.create_collection("t", vectors_config={}, sparse_vectors_config={"bm25": models.SparseVectorParams()})
    client.upsert("t", [models.PointStruct(id=i, vector={"bm25": models.SparseVector(indices=idx, values=val)})
                        for i, (idx, val) in enumerate(enc.encode_document(t) for t in toks)])
    q = tokenize("frozen base weights adapters")
    idx, val = enc.encode_query(q)
    res = client.query_points("t", query=models.SparseVector(indices=idx, values=val), using="bm25", limit=6)
    ref = BM25Okapi(toks).get_scores(q)
    got = {p.id: p.score for p in res.points}
    for i, s in got.items():
        assert abs(s - ref[i]) < 1e-5
    assert [p.id for p in res.points][:2] == list(np.argsort(-ref)[:2])
