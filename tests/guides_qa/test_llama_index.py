"""pipeline.llama_index: the guides index inside llama-index's own retriever and query-engine machinery."""

from __future__ import annotations

import shutil

import pytest

from core.llm import FakeLLM

QUESTION = "What is the role of layer normalization?"


@pytest.fixture
def make_pipe(small_index, tmp_path):
    """Pipelines over a private copy of the small hash-embedded index, with a fake LLM and the overlap reranker."""
    from core.settings import Settings
    from pipeline.qa import Pipeline
    from ingest.embed import HashEmbedder

    guides, data = small_index
    shutil.copytree(data, tmp_path / "data")
    made = []

    def make(llm: str = "fake") -> Pipeline:
        s = Settings(guides_dir=guides, data_dir=tmp_path / "data", embed_model="fake:hash", reranker="fake:overlap",
                     llm=llm)
        made.append(Pipeline(s, embedder=HashEmbedder()))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def pipe(make_pipe):
    return make_pipe()


def _assert_node_is_hit(node, hit, guides_dir):
    m = node.node.metadata
    p = hit.payload
    assert node.node.node_id == p["chunk_id"] and node.node.get_content() == p["text"]
    assert (m["guide"], m["guide_title"], m["section"], m["lines"]) == (p["guide"], p["guide_title"], p["section"],
                                                                        list(p["lines"]))
    assert node.score == pytest.approx(hit.score) and m["scores"]["rerank"] == pytest.approx(hit.scores["rerank"])
    # the line range ends at the chunk's last line in the guide file
    start, end = m["lines"]
    source = (guides_dir / m["guide"]).read_text().split("\n")[start - 1 : end]
    last = [l for l in p["text"].split("\n") if l.strip()][-1]
    assert source[-1].strip() == last.strip()


def test_retriever_returns_the_pipelines_hits_as_nodes(pipe, small_index):
    from pipeline.llama_index import GuidesRetriever

    nodes = GuidesRetriever(pipe, top_k=4).retrieve(QUESTION)
    hits = pipe.retrieve([QUESTION], top_k=4).hits
    assert len(nodes) == len(hits) == 4
    for n, h in zip(nodes, hits):
        _assert_node_is_hit(n, h, small_index[0])
    assert "layer normalization" in nodes[0].node.get_content().lower()


def test_retriever_rewrites_a_follow_up_with_its_history(pipe):
    from pipeline.llama_index import GuidesRetriever

    follow = GuidesRetriever(pipe, top_k=3, history=["What is LoRA?"]).retrieve("What are its drawbacks?")
    expected = pipe.retrieve(["What is LoRA?", "What are its drawbacks?"], top_k=3).hits
    assert [n.node.node_id for n in follow] == [h.chunk_id for h in expected]
    alone = pipe.retrieve(["What are its drawbacks?"], top_k=3).hits
    assert [h.chunk_id for h in alone] != [h.chunk_id for h in expected]


def test_retriever_rejects_bad_arguments(pipe):
    from pipeline.llama_index import GuidesRetriever

    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):
        GuidesRetriever(pipe, top_k=0)
    with pytest.raises(ValueError, match=r"Unknown retrieval mode 'sparse'.*'bm25'"):
        GuidesRetriever(pipe, mode="sparse")


def test_llama_index_retriever_query_engine_runs_offline_with_the_fake_llm(pipe, small_index):
    from llama_index.core.query_engine import RetrieverQueryEngine

    from pipeline.llama_index import GuidesLLM, GuidesRetriever

    fake = FakeLLM(script={"layer normalization": "Layer normalization stabilises training."})
    engine = RetrieverQueryEngine.from_args(GuidesRetriever(pipe, top_k=3), llm=GuidesLLM(fake))
    resp = engine.query(QUESTION)
    assert str(resp) == "Layer normalization stabilises training."
    hits = pipe.retrieve([QUESTION], top_k=3).hits
    assert [n.node.node_id for n in resp.source_nodes] == [h.chunk_id for h in hits]
    for n, h in zip(resp.source_nodes, hits):
        _assert_node_is_hit(n, h, small_index[0])
    # llama-index's synthesizer put the retrieved passages (with their section) in the fake model's prompt
    prompt = fake.calls[-1]["messages"][-1]["content"]
    assert QUESTION in prompt and hits[0].text in prompt and f"section: {hits[0].payload['section']}" in prompt
    assert "chunk_id" not in prompt and "scores" not in prompt


def test_retriever_query_engine_helper_uses_the_pipelines_llm(pipe):
    from pipeline.llama_index import retriever_query_engine

    resp = retriever_query_engine(pipe, top_k=2).query(QUESTION)
    assert len(resp.source_nodes) == 2
    assert pipe.llm.calls and resp.source_nodes[0].node.get_content() in pipe.llm.calls[-1]["messages"][-1]["content"]


def test_guides_query_engine_answers_exactly_as_the_pipeline(pipe):
    from pipeline.llama_index import GuidesQueryEngine

    resp = GuidesQueryEngine(pipeline=pipe).query(QUESTION)
    ask = pipe.ask([QUESTION])
    assert not ask.refused and ask.answer.citations
    assert resp.response == ask.answer.answer
    assert [n.node.node_id for n in resp.source_nodes] == [p.hit.chunk_id for p in ask.answer.passages]
    assert [n.node.metadata["n"] for n in resp.source_nodes] == [p.n for p in ask.answer.passages]
    assert resp.metadata["citations"] == [c.to_json() for c in ask.answer.citations]
    assert resp.metadata["status"] == ask.answer.status and resp.metadata["refused"] is False


def test_guides_query_engine_refusal_is_a_response_too(make_pipe):
    from pipeline.llama_index import GuidesQueryEngine

    pipe = make_pipe("fake:refuse")
    resp = GuidesQueryEngine(pipeline=pipe).query(QUESTION)
    ask = pipe.ask([QUESTION])
    assert ask.refused and resp.metadata["refused"] is True and resp.response == ask.answer.answer
    assert resp.metadata["refusal_reason"] == ask.answer.refusal_reason and resp.metadata["status"] == "refused"


def test_guides_llm_complete_stream_and_chat():
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    from pipeline.llama_index import GuidesLLM

    fake = FakeLLM(script={"ping": "pong pong pong"})
    llm = GuidesLLM(fake, max_tokens=2)
    assert llm.metadata.context_window == fake.context_window and llm.metadata.num_output == 2
    assert llm.complete("ping").text == "pong pong"                    # max_tokens reaches the project LLM
    deltas = [r.delta for r in llm.stream_complete("ping")]
    assert deltas == ["pong", " pong"]
    msgs = [ChatMessage(role=MessageRole.SYSTEM, content="be brief"), ChatMessage(role=MessageRole.USER, content="ping")]
    assert llm.chat(msgs).message.content == "pong pong"
    assert fake.calls[-1]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping"}]
    assert [r.delta for r in llm.stream_chat(msgs)] == ["pong", " pong"]
    with pytest.raises(ValueError, match="got a 'tool' message"):
        llm.chat([ChatMessage(role=MessageRole.TOOL, content="x")])
    with pytest.raises(TypeError, match="core.llm.load_llm"):
        GuidesLLM("not an llm")


@pytest.mark.slow
def test_real_index_retrieval_through_llama_index(real_pipeline):
    """The real guides, the real embedder and the real Qdrant index, through GuidesRetriever."""
    from pipeline.llama_index import GuidesRetriever

    nodes = GuidesRetriever(real_pipeline, top_k=5).retrieve("What is LoRA and why is it parameter-efficient?")
    hits = real_pipeline.retrieve(["What is LoRA and why is it parameter-efficient?"], top_k=5).hits
    assert [n.node.node_id for n in nodes] == [h.chunk_id for h in hits]
    assert "lora" in nodes[0].node.get_content().lower() or "lora" in nodes[0].node.metadata["section"].lower()
    for n in nodes:
        m = n.node.metadata
        assert m["guide"].endswith((".md", ".txt")) and 1 <= m["lines"][0] <= m["lines"][1] and " › " in m["section"]
