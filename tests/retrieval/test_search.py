import pytest

from pipeline.qa import InputError, Pipeline, validate_question
from ingest.embed import HashEmbedder
from ingest.pipeline import run_ingest


@pytest.fixture
def small_index(tmp_path, fake_settings):
    g = tmp_path / "g"
    g.mkdir()
    (g / "a.md").write_text(
        "# Guide A\n\n## LoRA\n\nLoRA trains low-rank adapters on frozen weights.\n\n"
        "## KV Cache\n\nThe KV cache stores keys and values of past tokens to speed up decoding.\n\n"
        "## Beam Search\n\nBeam search keeps the best candidate sequences at every step.\n"
    )
    def make(**kw):
        s = fake_settings(g, **kw)
        run_ingest(s, embedder=HashEmbedder(), progress=False)
        return s
    return make


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_every_mode_and_fusion_finds_the_section(small_index, mode, fusion):
    s = small_index(fusion=fusion)
    pipe = Pipeline(s, embedder=HashEmbedder())
    res = pipe.retrieve(["kv cache keys values"], mode=mode)
    pipe.close()
    assert res.hits[0].payload["section"] == "Guide A › KV Cache"
    assert [h.rank for h in res.hits] == list(range(1, len(res.hits) + 1))
    j = res.to_json()
    assert set(j["contexts"][0]) >= {"rank", "chunk_id", "guide", "section", "lines", "text", "score"}
    assert set(j["timings_ms"]) == {"embed", "search", "total"}


def test_rrf_k_changes_scores(small_index):
    s2 = small_index(fusion="rrf", rrf_k=2)
    p = Pipeline(s2, embedder=HashEmbedder())
    top2 = p.retrieve(["beam search"]).hits[0].score
    p.close()
    s60 = s2.model_copy(update={"rrf_k": 60})
    p = Pipeline(s60, embedder=HashEmbedder())
    top60 = p.retrieve(["beam search"]).hits[0].score
    p.close()
    assert top2 > top60 > 0
    assert abs(top60 - 2 / 60) < 1e-6          # first in both lists; Qdrant counts ranks from 0: 1/(60+0) twice


def test_unknown_mode_lists_valid_ones(small_index):
    p = Pipeline(small_index(), embedder=HashEmbedder())
    with pytest.raises(ValueError, match=r"Supported modes are: \['hybrid', 'dense', 'bm25'\]"):
        p.searcher.search("x", mode="sparse")
    p.close()


def test_query_with_no_known_terms_still_returns_dense_hits(small_index):
    p = Pipeline(small_index(), embedder=HashEmbedder())
    assert p.retrieve(["zzz qqq"], mode="bm25").hits == []
    p.close()


@pytest.mark.parametrize("bad,msg", [
    ("", "empty"), ("   \n\t ", "empty"), ("x" * 1001, "limit is 1000"), ("what is\x00 lora", "control characters"),
    (42, "must be text"),
])
def test_bad_questions_are_rejected_with_the_reason(bad, msg):
    with pytest.raises(InputError, match=msg):
        validate_question(bad, max_chars=1000)
