"""The peer: what a user would pick instead, answered in the same eval run.

The plainest retrieval-augmented pipeline a llama-index user builds is its default ``RetrieverQueryEngine``
(the compact response synthesizer and llama-index's default QA prompt) over a retriever. The peer is that
engine over this project's own retriever (``pipeline.llama_index.GuidesRetriever``: the same hybrid search
and reranker), reading the top ``PEER_TOP_K`` whole passages, answered by the same model. It has no refusal
gate, no sentence selection and no verifier, so the comparison measures what those add (or cost).

- A follow-up is asked as the standalone question retrieval sees (``Pipeline.search_query``): the engine
  has no chat history.
- The peer "refuses" when the first sentence of its reply says the context lacks the answer
  (``peer_declined``: the answerer's own test plus llama-index's "context" wording).
- Its answers are scored by the same rules as the project's (``eval.answers.judge_answer``: every answer
  fact, no number that none of the passages it read states).

Example::

    engine = peer_engine(pipe)
    rec = peer_record(engine, pipe, item, relevant={"guide.md#3"})
    print(rec["answer"], rec["correct"], rec["seconds"])
"""

from __future__ import annotations

import re
import time

from answer.refusal import model_declined
from core.text import sentence_spans

from .golden import GoldenItem

PEER_TOP_K = 3
PEER_PIPELINE = (f"llama-index RetrieverQueryEngine (compact synthesizer, default prompt) over the same retriever, "
                 f"top {PEER_TOP_K} whole passages, same model")

_CONTEXT_DECLINES = re.compile(
    r"(context (information )?(does not|doesn['’]t|did not) (provide|contain|mention|include|specify|say|give|answer)|"
    r"not (mentioned|provided|included|specified|stated|found|given) in the (provided |given )?context|"
    r"\bno (information|mention|details?)\b.{0,40}\bcontext|"
    r"context (provided|given) (does not|doesn['’]t))",
    re.I,
)


def peer_declined(answer: str) -> bool:
    """True when the reply's first sentence says the context (or the passages) lacks the answer."""
    if model_declined(answer):
        return True
    text = " ".join(answer.split())
    m = _CONTEXT_DECLINES.search(text)
    if not m:
        return False
    first = sentence_spans(text)
    return m.start() < (first[0][1] if first else len(text))


def peer_engine(pipe, *, top_k: int = PEER_TOP_K):
    """llama-index's default query engine over the pipeline's retriever and LLM."""
    from pipeline.llama_index import retriever_query_engine

    return retriever_query_engine(pipe, top_k=top_k)


def peer_record(engine, pipe, item: GoldenItem, relevant: set[str]) -> dict:
    """Answer one golden question with the peer; the fields it adds under "peer" in questions.jsonl."""
    from .answers import judge_answer

    query = pipe.search_query(item.turns)
    t0 = time.perf_counter()
    resp = engine.query(query)
    seconds = time.perf_counter() - t0
    text = str(resp.response or "").strip()
    passages = [n.node.get_content() for n in resp.source_nodes]
    ids = [n.node.node_id for n in resp.source_nodes]
    refused = peer_declined(text)
    return {"id": item.id, "part": item.part, "kind": item.kind, "question": item.question, "asked": query,
            "answer": text, "refused": refused, "chunk_ids": ids, "used_relevant": any(i in relevant for i in ids),
            "seconds": round(seconds, 2), "citations": [],
            **judge_answer(item, text, refused, passages, [], None)}
