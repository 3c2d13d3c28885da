"""Both index backends behind one interface: embedded (qdrant-edge) and server (qdrant-client local mode)."""

import pytest
from qdrant_client import QdrantClient

from core.settings import SettingsError, load_settings
from pipeline.qa import Pipeline
from ingest.backends import IndexBackendError, IndexPoint, IndexQuery, IndexSpec, get_backend
from ingest.backends.edge import EdgeBackend
from ingest.backends.server import ServerBackend
from core.text import tokenize
from ingest.bm25 import BM25Encoder
from ingest.embed import HashEmbedder
from ingest.pipeline import run_ingest
from ingest.store import IndexLayout

TEXTS = [
    "LoRA trains low-rank adapters on frozen weights",
    "The KV cache stores keys and values of past tokens",
    "Beam search keeps the best candidate sequences",
    "Quantization stores weights in fewer bits",
    "Attention scores are scaled by the square root of the key dimension",
    "Speculative decoding drafts tokens with a small model",
]


def _points(emb, bm25):
    vecs = emb.embed(TEXTS)
    return [IndexPoint(id=f"00000000-0000-0000-0000-{i:012d}", dense=vecs[i].tolist(),
                       sparse=bm25.encode_document(tokenize(t)), payload={"chunk_id": str(i), "text": t})
            for i, t in enumerate(TEXTS)]


@pytest.fixture(params=["embedded", "server"])
def backend(request, tmp_path):
    if request.param == "embedded":
        return EdgeBackend(None)
    return ServerBackend(None, client=QdrantClient(":memory:"))


@pytest.fixture
def written(backend, tmp_path):
    emb = HashEmbedder()
    bm25 = BM25Encoder.fit(tokenize(t) for t in TEXTS)
    w = backend.create(tmp_path, IndexSpec(name="guides_test", dim=emb.dim, n_points=len(TEXTS), dense_index="exact"))
    w.add(_points(emb, bm25)[:4])
    w.add(_points(emb, bm25)[4:])
    info = w.finish()
    reader = backend.open(tmp_path, info)
    yield backend, info, reader, emb, bm25
    reader.close()


def _q(emb, bm25, text, mode, **kw):
    return IndexQuery(mode=mode, limit=3, dense=emb.embed([text])[0].tolist(),
                      sparse=bm25.encode_query(tokenize(text)), **kw)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
def test_every_mode_finds_the_point(written, mode, fusion):
    backend, info, reader, emb, bm25 = written
    hits = reader.query(_q(emb, bm25, "kv cache keys values", mode, fusion=fusion))
    assert hits[0].payload["text"] == TEXTS[1]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert info["backend"] == backend.name and info["n_points"] == len(TEXTS)


def test_bm25_scores_are_the_stored_weights_dot_product(written):
    _, _, reader, emb, bm25 = written
    q = _q(emb, bm25, "beam search candidate", "bm25")
    doc = dict(zip(*bm25.encode_document(tokenize(TEXTS[2]))))
    want = sum(v * doc.get(i, 0.0) for i, v in zip(*q.sparse))
    assert reader.query(q)[0].score == pytest.approx(want, rel=1e-5)


def test_both_backends_rank_alike(tmp_path):
    emb = HashEmbedder()
    bm25 = BM25Encoder.fit(tokenize(t) for t in TEXTS)
    results = []
    for i, be in enumerate([EdgeBackend(None), ServerBackend(None, client=QdrantClient(":memory:"))]):
        w = be.create(tmp_path / str(i), IndexSpec(name="c", dim=emb.dim, n_points=len(TEXTS), dense_index="exact"))
        w.add(_points(emb, bm25))
        r = be.open(tmp_path / str(i), w.finish())
        results.append([[(h.payload["chunk_id"], round(h.score, 4)) for h in r.query(_q(emb, bm25, t, "hybrid"))]
                        for t in ["weights in fewer bits", "draft tokens small model", "square root key"]])
        r.close()
    assert results[0] == results[1]


def test_hnsw_graph_finds_the_same_nearest_point(backend, tmp_path):
    emb = HashEmbedder()
    bm25 = BM25Encoder.fit(tokenize(t) for t in TEXTS)
    w = backend.create(tmp_path, IndexSpec(name="h", dim=emb.dim, n_points=len(TEXTS), dense_index="hnsw"))
    w.add(_points(emb, bm25))
    info = w.finish()
    assert info["dense_index"] == "hnsw"
    r = backend.open(tmp_path, info)
    for exact in (True, False):
        assert r.query(_q(emb, bm25, "low-rank adapters", "dense", exact=exact, hnsw_ef=64))[0].payload["text"] == TEXTS[0]
    r.close()


def test_a_short_write_is_refused_before_publishing(backend, tmp_path):
    emb = HashEmbedder()
    w = backend.create(tmp_path, IndexSpec(name="s", dim=emb.dim, n_points=10, dense_index="exact"))
    w.add(_points(emb, BM25Encoder.fit(tokenize(t) for t in TEXTS)))
    with pytest.raises(IndexBackendError, match="expected 10"):
        w.finish()
    w.close()


def test_backend_is_chosen_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("QDRANT_URL", raising=False)
    assert get_backend(load_settings(data_dir=tmp_path)).name == "embedded"
    assert load_settings(data_dir=tmp_path, qdrant_url="http://q:6333").index_backend_name == "server"
    assert load_settings(data_dir=tmp_path, qdrant_url="http://q:6333", index_backend="embedded").index_backend_name == "embedded"
    with pytest.raises(SettingsError, match="index_backend"):
        load_settings(index_backend="faiss")
    with pytest.raises(IndexBackendError, match="needs QDRANT_URL"):
        get_backend(load_settings(data_dir=tmp_path, index_backend="server")).create(tmp_path, IndexSpec("x", 4, 0, "exact"))


def test_open_reports_a_missing_shard(tmp_path):
    with pytest.raises(IndexBackendError, match="guides ingest --rebuild"):
        EdgeBackend(None).open(tmp_path, {"path": "shard"})


def test_server_backend_end_to_end_with_versions_and_alias(guides_copy, fake_settings):
    """Ingest, search and prune through the server backend (qdrant-client local mode speaks the server's API)."""
    client = QdrantClient(":memory:")
    s = fake_settings(guides_copy, qdrant_url="http://qdrant.test:6333")
    backend = ServerBackend(s, client=client)
    first = run_ingest(s, embedder=HashEmbedder(), progress=False, backend=backend)
    pipe = Pipeline(s, embedder=HashEmbedder(), index_backend=backend)
    hits = pipe.retrieve(["kv cache keys values decoding"]).hits
    assert hits and "KV" in " ".join(h.text for h in hits[:3]).upper()
    pipe.close()
    assert client.get_aliases().aliases[0].collection_name == f"guides_{first.version}"
    for i in range(3):                                       # three more versions: only two collections stay
        (guides_copy / f"extra{i}.md").write_text(f"# Extra {i}\n\n## Topic\n\nSpeculative decoding note {i}.\n")
        last = run_ingest(s, embedder=HashEmbedder(), progress=False, backend=backend)
    names = sorted(c.name for c in client.get_collections().collections)
    kept = sorted(p.name for p in IndexLayout(s).versions.iterdir())
    assert names == [f"guides_{v}" for v in kept] and len(kept) == 2 and last.version in kept
    # The same versions through the embedded backend: the settings name another backend, so it is rebuilt once.
    s2 = fake_settings(guides_copy)
    again = run_ingest(s2, embedder=HashEmbedder(), progress=False)
    assert "'server' index backend" in again.index_rebuild_reason and again.embedded == 0
