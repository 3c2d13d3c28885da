"""Fitting the trained reranker: training columns, the held-out split, and a real (tiny) training run."""

from __future__ import annotations

import json

import pytest

from core.types import Chunk
from retrieval.rerank import RerankerError, SentenceTransformersCrossEncoder, load_reranker
from retrieval.trained import TRAINED_FORMAT, corpus_fingerprint, model_dir
from retrieval.training import fit as T


def chunk(path: list[str], text: str, guide: str = "g.md") -> Chunk:
    return Chunk(guide=guide, guide_title="Guide", section_path=path, start=1, end=2, text=text)


def test_columns_and_heldout_split():
    chunks = [chunk([f"S{i}"], f"text {i}") for i in range(40)]
    ex = [(f"q{i}", i, [(i + 1) % 40, (i + 2) % 40]) for i in range(40)] + [("short", 0, [1])]
    cols = T.to_columns(ex, chunks, 2)
    assert list(cols) == ["query", "positive", "negative_1", "negative_2"] and len(cols["query"]) == 40
    assert cols["positive"][3] == "S3\ntext 3" and cols["negative_2"][3] == "S5\ntext 5"
    train, held = T.split_heldout(ex, chunks, 0.25, 13)
    assert 3 <= len(held) <= 20 and len(train) + len(held) == len(ex)
    assert not {e[1] for e in train} & {e[1] for e in held}           # no chunk on both sides
    assert T.split_heldout(ex, chunks, 0.25, 13) == (train, held)


@pytest.mark.slow
def test_tiny_training_saves_loads_and_is_deterministic(tiny_index, tmp_path):
    from ingest.store import IndexLayout

    s = tiny_index
    chunks = IndexLayout(s).require_current().chunks()
    data = tmp_path / "train.jsonl"
    ref = lambda c: {"chunk_id": c.chunk_id, "content_hash": c.content_hash}  # noqa: E731
    data.write_text("".join(json.dumps({"query": q, **ref(chunks[i]), "hybrid_rank": 1,
                                        "negatives": [ref(c) for j, c in enumerate(chunks) if j != i]}) + "\n"
                            for i, q in enumerate(["why divide by sqrt d_k", "lora low rank", "what does a reranker do",
                                                   "continuous batching"][: len(chunks)])))
    path = T.train_reranker(s, progress=False, tiny=True, data=data)
    assert path.parent == s.data_dir / "models" and path.name.startswith("reranker-")
    assert {"config.json", "model.safetensors", "modules.json", "metadata.json", "reranker.json"} <= {p.name for p in path.iterdir()}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    assert path == model_dir(s, chunks, tiny=True, data=data)               # where inference looks for it
    assert json.loads((path / "reranker.json").read_text())["format"] == TRAINED_FORMAT
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["steps"] >= 1 and meta["recipe"]["tiny"] is True and meta["data"]["train_questions"] >= 2
    assert meta["corpus_fingerprint"] == corpus_fingerprint(chunks) and meta["n_chunks"] == len(chunks)
    rr = SentenceTransformersCrossEncoder(str(path))
    passages = ["Attention\nLarge dot products push the softmax ...", "Serving\nContinuous batching ..."]
    first = rr.score("why divide by sqrt d_k?", passages)
    assert len(first) == 2 and all(isinstance(x, float) for x in first) and first[0] != first[1]
    assert rr.score("q", []) == []
    again = T.train_reranker(s, progress=False, tiny=True, data=data)       # same seed, same model
    assert again == path
    assert SentenceTransformersCrossEncoder(str(path)).score("why divide by sqrt d_k?", passages) == pytest.approx(first, abs=1e-5)
    with pytest.raises(RerankerError, match="stale"):                      # the tiny model never stands in
        load_reranker(s.model_copy(update={"reranker": "trained"}))


@pytest.mark.slow
def test_tiny_model_trained_on_bank_pairs_for_one_step_reranks_hybrid_hits(tiny_index, tmp_path):
    """The bank's pairs (the tiny guides' own questions), one training step, then reranking real hybrid hits."""
    from ingest.embed import load_embedder
    from retrieval.rerank import rerank
    from retrieval.search import HybridSearcher, IndexHandle
    from retrieval.training.bank import write_bank_data

    s = tiny_index.model_copy(update={"reranker_layers": 2})
    rows, meta = write_bank_data(s, out=tmp_path / "bank.jsonl")
    assert meta["stats"]["questions"] == 3 and rows, meta["stats"]       # 'What is LoRA?' may go as a dev question
    path = T.train_reranker(s, progress=False, tiny=True, data=tmp_path / "bank.jsonl")
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["steps"] >= 1 and meta["recipe"]["layers"] == 2
    assert meta["data"]["per_file"]["bank.jsonl"] == {"rows": len(rows), "usable": len(rows)}
    rr = SentenceTransformersCrossEncoder(str(path))
    assert len(rr.model[0].auto_model.encoder.layer) == 2                 # saved and loaded with 2 layers
    index = IndexHandle(s)
    try:
        hits, _ = HybridSearcher(s, embedder=load_embedder(s.embed_model), index=index).search(
            "What does a reranker do in RAG?", top_k=4)
        before = [h.chunk_id for h in hits]
        out = rerank("What does a reranker do in RAG?", hits, reranker=rr, weight=1.0, candidates=3, fusion="rrf")
    finally:
        index.close()
    assert sorted(h.chunk_id for h in out[:3]) == sorted(before[:3]) and out[3].chunk_id == before[3]
    assert all(isinstance(h.scores["ce"], float) for h in out[:3])
    ce = [h.scores["ce"] for h in sorted(out[:3], key=lambda h: -h.scores["rerank"])]
    assert ce == sorted(ce, reverse=True)                                  # w=1: the model's own order
    # bf16 (CPU autocast) scores close to fp32's
    passages = ["Retrieval\nA cross-encoder reads the question", "Serving\nContinuous batching", "Attention\nsoftmax"]
    fp32 = rr.score("What does a reranker do?", passages)
    bf16 = SentenceTransformersCrossEncoder(str(path), precision="bf16").score("What does a reranker do?", passages)
    assert bf16 == pytest.approx(fp32, abs=0.05) and bf16 != fp32
    with pytest.raises(RerankerError, match="GUIDES_RERANKER_PRECISION"):
        SentenceTransformersCrossEncoder(str(path), precision="int4")
