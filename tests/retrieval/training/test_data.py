"""Training data for the trained reranker: questions, dev-set decontamination, hard negatives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.types import Chunk
from retrieval.training import data as D


def chunk(path: list[str], text: str, guide: str = "g.md") -> Chunk:
    return Chunk(guide=guide, guide_title="Guide", section_path=path, start=1, end=2, text=text)


# --------------------------------------------------------------------------- questions, decontamination, negatives


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


@pytest.mark.parametrize("source,made_by", [("llm", "bundled:qwen2.5-coder-1.5b"),
                                             ("llm-small", "bundled-small:qwen2.5-coder-0.5b"), ("bank", None)])
def test_committed_training_data_shares_no_question_with_the_dev_set(source, made_by):
    """Each file in the repository against the dev set as it is now (which grows). Checked with a
    measure the filter does not use (stemmed content words, ``core.text.tokenize``), so a filter
    that let near copies through would be caught here, not re-approved."""
    from core.text import tokenize
    from retrieval.trained import DATA_SOURCES

    rows = D.read_training_data(DATA_SOURCES[source])
    assert len(rows) >= 100
    dev = [(d, set(tokenize(d))) for d in D.load_dev_questions()]
    clashes = []
    for r in rows:
        q = set(tokenize(r["query"]))
        for d, w in dev:
            if q and w and len(q & w) / len(q | w) >= 0.8:
                clashes.append((r["query"], d))
    assert clashes == [], f"{len(clashes)} training questions too close to dev questions, e.g. {clashes[:2]}"
    for r in rows:
        assert r["chunk_id"] not in {n["chunk_id"] for n in r["negatives"]}
        assert 1 <= len(r["negatives"]) <= D.MAX_NEGATIVES
        assert (made_by is None and r["hybrid_rank"] is None) or 1 <= r["hybrid_rank"] <= D.HYBRID_DEPTH
    meta = json.loads(D.data_paths(DATA_SOURCES[source])[1].read_text())
    assert meta["stats"]["kept"] == len(rows)
    assert meta["llm"].startswith(made_by) if made_by else meta["command"].endswith("--write-data bank")


def test_heading_words_drop_stopwords_fillers_and_numbers():
    assert D.heading_words(["Fine-tuning", "Q18: LoRA vs QLoRA"]) == {"lora", "qlora"}
    assert D.heading_words(["Explain the difference between LoRA and QLoRA (2023)"]) == {"lora", "qlora"}
    assert D.heading_words([]) == set()


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


class QuestionLLM:
    """Fake LLM: per chunk, a question about the passage's first words, the next of ``leaks`` (rewordings
    of dev questions an LLM might write), and one off-topic question."""

    name = "fake:questions"
    context_window = 4096

    def __init__(self, leaks: list[str]):
        self.leaks = leaks
        self.calls = 0

    def stream(self, messages, **_):
        leak = self.leaks[self.calls % len(self.leaks)]
        self.calls += 1
        words = messages[-1]["content"].split("Passage:\n", 1)[1].split()[:8]
        yield f"1. What is meant by {' '.join(words)}?\n2. {leak}\n3. Who won the 1998 World Cup final?"

    def count_tokens(self, text):
        return len(text.split())


# --------------------------------------------------------------------------- a real index, fakes for the models


def test_write_training_data_drops_rewordings_of_dev_questions_and_resumes(tiny_index, tmp_path):
    """Fake LLM and fake embedder, real index and real hybrid search."""
    from core.text import normalise_for_match

    dev_q = "Why have most open-source LLMs like LLaMA and Mistral moved to rotary position embeddings?"
    assert dev_q in D.load_dev_questions(), "the rewordings below are of this dev question; pick another if it moved"
    leaks = ["Why did most open-source LLMs such as LLaMA and Mistral move to rotary position embeddings?",  # paraphrase
             "why have most open-source llms, like llama & mistral, moved to rotary position-embeddings ?",  # case, punctuation
             "Most open-source LLMs like LLaMA and Mistral moved to rotary position embeddings: why?",     # word order
             "Why have most open-source LLMs like LLaMA and Mistral switched to rotary position embeddings?",  # one word
             dev_q]
    llm = QuestionLLM(leaks)
    out = tmp_path / "train.jsonl"
    s = tiny_index.model_copy(update={"reranker_data_chunks": 50})
    rows, meta = D.write_training_data(s, out=out, llm=llm, progress=False)
    st = meta["stats"]
    assert llm.calls == meta["chunks_asked"] >= 3
    assert st["questions_written"] == 3 * llm.calls
    assert st["dropped_dev"] == llm.calls and all(d["dev"] == dev_q for d in st["dev_drops"])
    assert {d["question"] for d in st["dev_drops"]} == {D.parse_questions(f"{q}")[0] for q in leaks[: llm.calls]}
    assert st["kept"] == len(rows) and st["kept"] + st["dropped_not_in_top20"] + st["dropped_dev"] == st["questions_written"]
    kept = {normalise_for_match(r["query"]) for r in rows}
    assert rows and all(r["negatives"] for r in rows)
    assert not kept & {normalise_for_match(q) for q in leaks}
    assert any(q.startswith("what is meant by") for q in kept)            # genuine questions do get through
    assert D.read_training_data(out) == rows and json.loads(out.with_suffix(".meta.json").read_text())["stats"] == st
    # a second run asks the LLM nothing: the questions are kept per chunk
    again = QuestionLLM(leaks)
    assert D.write_training_data(s, out=out, llm=again, progress=False)[0] == rows and again.calls == 0


# --------------------------------------------------------------------------- real models (slow)


@pytest.mark.slow
def test_committed_training_data_is_far_from_dev_questions_by_embedding(real_embedder):
    """The MiniLM-cosine half of the decontamination, re-checked on the committed file."""
    from retrieval.trained import DATA_SOURCES

    rows = [r for f in DATA_SOURCES.values() for r in D.read_training_data(f)]
    dev = D.load_dev_questions()
    sims = real_embedder.embed([r["query"] for r in rows]) @ real_embedder.embed(dev).T
    worst = float(sims.max())
    assert worst < D.DEV_COS, f"a training question has cosine {worst:.2f} with a dev question"


def test_a_second_llm_source_asks_only_chunks_the_first_does_not_cover(tiny_index, tmp_path):
    """`--write-data llm-small`: the chunks of the first file are skipped, the next ones in the seeded order asked."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    s = tiny_index.model_copy(update={"reranker_data_chunks": 2})
    rows1, meta1 = D.write_training_data(s, out=first, llm=QuestionLLM(["What is HyDE?"]), progress=False)
    asked1 = {json.loads(line)["chunk_id"] for line in first.with_name("first.jsonl.partial").read_text().splitlines()}
    llm = QuestionLLM(["What is HyDE?"])
    rows2, meta2 = D.write_training_data(s.model_copy(update={"reranker_data_chunks": 50}), out=second, llm=llm,
                                         skip_chunks_of=[first], progress=False, command="x --write-data llm-small")
    asked2 = {json.loads(line)["chunk_id"] for line in second.with_name("second.jsonl.partial").read_text().splitlines()}
    covered = {r["chunk_id"] for r in rows1}
    assert len(asked1) == 2 and covered and asked2 and not covered & asked2
    assert meta2["chunks_skipped_as_covered"] == len(covered) and meta2["command"] == "x --write-data llm-small"
    assert asked1 - covered <= asked2            # a chunk asked before but without a kept question is asked again
    with pytest.raises(D.DataError, match="--write-data"):
        D.write_training_data(s, out=second, llm=llm, skip_chunks_of=[tmp_path / "missing.jsonl"], progress=False)
