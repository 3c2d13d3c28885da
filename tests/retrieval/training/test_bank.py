"""Training pairs from the practice bank: each guide question mapped to the chunk holding its answer,
decontaminated against the dev set, with hard negatives from the real hybrid search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.text import normalise_for_match
from core.types import Chunk
from ingest.bank import Entry
from retrieval.training import bank as B
from retrieval.training import data as D

REPO = Path(__file__).resolve().parents[3]
REAL_GUIDES = REPO / "data" / "guides"


def chunk(guide: str, start: int, end: int, text: str = "text", path=("S",)) -> Chunk:
    return Chunk(guide=guide, guide_title="Guide", section_path=list(path), start=start, end=end, text=text)


def entry(guide: str, lines: tuple[int, int], question: str = "Why?") -> Entry:
    return Entry(id="x", question=question, guide=guide, section="Guide › S", question_lines=(lines[0] - 1,) * 2,
                 answer_lines=lines, reference="")


def test_answer_chunks_most_answer_lines_first_same_guide_only():
    chunks = [chunk("a.md", 1, 9), chunk("a.md", 10, 12), chunk("a.md", 13, 30), chunk("b.md", 10, 30),
              chunk("a.md", 31, 40)]
    assert B.answer_chunks(entry("a.md", (11, 20)), chunks) == [2, 1]        # 8 lines, then 3; b.md never
    assert B.answer_chunks(entry("a.md", (12, 13)), chunks) == [1, 2]        # a tie: the earlier chunk
    assert B.answer_chunks(entry("a.md", (41, 50)), chunks) == []
    assert B.answer_chunks(entry("c.md", (1, 50)), chunks) == []


# --------------------------------------------------------------------------- the real guides


@pytest.fixture(scope="module")
def real_guides_index(tmp_path_factory):
    """The real guides, ingested with the hash embedder (fast; its chunk boundaries differ from MiniLM's a little)."""
    from core.settings import Settings
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest
    from ingest.store import IndexLayout

    s = Settings(guides_dir=REAL_GUIDES, data_dir=tmp_path_factory.mktemp("bank-index"), embed_model="fake:hash",
                 reranker="off", llm="fake")
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    v = IndexLayout(s).require_current()
    return v.chunks(), B.current_bank(v)


def _by_question(bank: list[Entry], question: str) -> Entry:
    found = [e for e in bank if e.question == question]
    assert len(found) == 1, f"{question!r} is not (once) in the bank: the guide changed; pick another question"
    return found[0]


@pytest.mark.parametrize("question,guide,holds", [
    # a heading that asks ("### Q1: ..."); the chunk is that question's section
    ("What is a Large Language Model (LLM)?", "100-llm-interview-questions.md",
     "trained on vast amounts of text data to understand and generate human-like text"),
    # a question line glued to its answer ("**Q...**" then "**Expected Answer:**")
    ("Why did Transformers replace RNNs/LSTMs as the standard for NLP?", "transformers-llm-interview-questions.md",
     "Why did Transformers replace RNNs/LSTMs"),
    # a quick-fire line of the copied web page
    ("What is LoRA and why use it?", "llm-interview-questions-webpage.txt", "LoRA"),
])
def test_bank_questions_map_to_the_chunk_holding_their_answer(real_guides_index, question, guide, holds):
    chunks, bank = real_guides_index
    e = _by_question(bank, question)
    pos = B.answer_chunks(e, chunks)
    assert e.guide == guide and pos
    c = chunks[pos[0]]
    assert c.guide == guide and c.start <= e.answer_lines[1] and c.end >= e.answer_lines[0]
    assert normalise_for_match(holds) in normalise_for_match(c.text)
    first_point = normalise_for_match(e.points[0].text)[:40]
    assert any(first_point in normalise_for_match(chunks[i].text) for i in pos)   # the answer's words, not only its lines


def test_every_bank_question_of_the_real_guides_has_a_chunk(real_guides_index):
    chunks, bank = real_guides_index
    assert len(bank) >= 140
    missing = [e.question for e in bank if not B.answer_chunks(e, chunks)]
    assert missing == []
    # the positive holds more of the answer's lines than any other chunk
    for e in bank:
        pos = B.answer_chunks(e, chunks)
        lines = lambda i: min(e.answer_lines[1], chunks[i].end) - max(e.answer_lines[0], chunks[i].start) + 1  # noqa: E731
        assert all(lines(pos[0]) >= lines(i) for i in pos)


# --------------------------------------------------------------------------- decontamination and negatives


DEV_Q = "Why have most open-source LLMs like LLaMA and Mistral moved to rotary position embeddings?"
REWORDINGS = [
    DEV_Q,
    "why have most open-source llms, like llama & mistral, moved to rotary position-embeddings ?",   # case, punctuation
    "Most open-source LLMs like LLaMA and Mistral moved to rotary position embeddings: why?",        # word order
    "Why have most open-source LLMs like LLaMA and Mistral switched to rotary position embeddings?",  # one word
]
GENUINE = "What does a reranker do in RAG?"


def _guide_with_questions(questions: list[str]) -> str:
    body = ["# Guide", "", "## Interview questions", ""]
    for n, q in enumerate(questions, 1):
        body += [f"### Q{n}: {q}", "", f"**Answer:** Answer {n}: a cross-encoder reads the question with passage {n} "
                 f"and reorders the candidates, rotary embeddings rotate queries and keys by position {n}.", ""]
    return "\n".join(body)


def test_bank_data_drops_rewordings_of_dev_questions_and_keeps_the_rest(tmp_path):
    from core.settings import Settings
    from ingest.pipeline import run_ingest

    assert DEV_Q in D.load_dev_questions(), "the rewordings are of this dev question; pick another if it moved"
    guides = tmp_path / "guides"
    guides.mkdir()
    (guides / "g.md").write_text(_guide_with_questions([*REWORDINGS, GENUINE]))
    (guides / "h.md").write_text("# Other\n\n## Serving\n\nContinuous batching keeps the GPU busy with new requests.\n")
    s = Settings(data_dir=tmp_path / "data", guides_dir=guides, embed_model="fake:hash", reranker="off", llm="fake")
    run_ingest(s, progress=False)
    out = tmp_path / "bank.jsonl"
    rows, meta = B.write_bank_data(s, out=out)
    st = meta["stats"]
    assert st["questions"] == len(REWORDINGS) + 1 and st["no_chunk"] == []
    assert st["dropped_dev"] == len(REWORDINGS) and {d["dev"] for d in st["dev_drops"]} == {DEV_Q}
    assert [r["query"] for r in rows] == [GENUINE] and rows[0]["source"] == "bank"
    from ingest.store import IndexLayout

    chunks = {c.chunk_id: c for c in IndexLayout(s).require_current().chunks()}
    pos = chunks[rows[0]["chunk_id"]]
    assert f"Answer {len(REWORDINGS) + 1}:" in pos.text
    negs = [chunks[n["chunk_id"]] for n in rows[0]["negatives"]]
    assert negs and all(n.chunk_id != pos.chunk_id for n in negs)
    assert D.read_training_data(out) == rows and json.loads(out.with_suffix(".meta.json").read_text())["stats"] == st

