"""The one factory that wires settings to real components; the CLI and app.py both call it.

Example::

    pipe = Pipeline(load_settings())
    result = pipe.retrieve(["what is LoRA?"])
    print(result.to_json()["contexts"][0]["section"])
"""

from __future__ import annotations

import threading
import time
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

from core.settings import Settings
from typing import Iterator

from ingest.embed import Embedder, load_embedder
from core.types import Hit
from retrieval.search import HybridSearcher, IndexHandle, Mode


class InputError(ValueError):
    """The user's input is unusable; the message says what is wrong and where."""


def validate_question(q: object, *, max_chars: int, where: str = "question") -> str:
    """Normalise a question; raise InputError for empty, over-long or control-character input."""
    if not isinstance(q, str):
        raise InputError(f"The {where} must be text, got {type(q).__name__}.")
    bad = sorted({f"U+{ord(c):04X}" for c in q if unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t"})
    if bad:
        raise InputError(f"The {where} contains control characters ({', '.join(bad[:5])}); remove them and ask again.")
    q = " ".join(q.split())
    if not q:
        raise InputError(f"The {where} is empty; type a question about the guides.")
    if len(q) > max_chars:
        raise InputError(
            f"The {where} is {len(q)} characters long; the limit is {max_chars} (GUIDES_MAX_QUESTION_CHARS). Shorten it."
        )
    return q


def validate_turns(turns, *, max_chars: int) -> list[str]:
    """A conversation's questions, each checked by ``validate_question``; InputError names the bad one."""
    if not isinstance(turns, list) or not turns:
        raise InputError("A conversation needs at least one question in 'turns'.")
    return [validate_question(t, max_chars=max_chars, where="question" if i == len(turns) - 1 else f"turn {i + 1}")
            for i, t in enumerate(turns)]


@dataclass
class RetrievalResult:
    id: str | None
    question: str
    turns: list[str]
    query: str
    hits: list[Hit]
    timings_ms: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"id": self.id, "question": self.question, "contexts": [h.to_json() for h in self.hits],
               "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()}}
        if self.query != self.question:
            out["search_query"] = self.query
        return out


@dataclass
class AskResult:
    """One answered turn: the retrieval that fed it, the cited answer, and stage timings."""
    id: str | None
    question: str
    turns: list[str]
    search_query: str
    hits: list[Hit]                  # passages after reranking, best first (the LLM saw the first few)
    answer: "object"                 # answer.answerer.AnswerResult
    timings_ms: dict = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.answer.refused

    def to_json(self) -> dict:
        a = self.answer
        return {
            "id": self.id,
            "question": self.question,
            "answer": a.answer,
            "citations": [c.to_json() for c in a.citations],
            "refused": a.refused,
            "refusal_reason": a.refusal_reason,
            "rewritten_query": a.rewritten_query,
            "status": a.status,
            "evidence": a.evidence,
            "coverage": a.coverage,
            "left_out": a.left_out,
            "evidence_budget": a.evidence_budget.to_json() if a.evidence_budget else None,
            "raw_answer": a.raw_answer,
            "warnings": a.warnings,
            "contexts": [h.to_json() for h in self.hits],
            "passages_used": [{"n": p.n, "chunk_id": p.hit.chunk_id} for p in a.passages],
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }


class Pipeline:
    """Loads each model and the index once per process, on first use; thread-safe."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, index_backend=None, llm=None):
        self.settings = settings
        self._embedder = embedder
        self._index_backend = index_backend          # ingest.backends.IndexBackend; default: the settings' one
        self._llm = llm                              # core.llm.LLM; default: the settings' one, loaded on first use
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = load_embedder(self.settings.embed_model)
            return self._embedder

    @cached_property
    def index(self) -> IndexHandle:
        return IndexHandle(self.settings, backend=self._index_backend)

    @cached_property
    def searcher(self) -> HybridSearcher:
        return HybridSearcher(self.settings, embedder=self.embedder, index=self.index)

    @cached_property
    def reranker(self):
        """The cross-encoder the settings name, or None for 'off' (loaded once)."""
        from retrieval.rerank import load_reranker

        return load_reranker(self.settings)

    def warm_reranker(self, chunks=None) -> int:
        """Cache what the reranker can pre-compute for every indexed chunk (maxsim: passage token
        embeddings, ~13 s on 2 cores for the five guides), so questions pay only for the query.
        ``chunks``: the current version's chunks when the caller already read them."""
        from retrieval.rerank import warm_reranker

        if self.reranker is None:
            return 0
        return warm_reranker(self.reranker, self.index.refresh().chunks() if chunks is None else chunks)

    @cached_property
    def llm(self):
        from core.llm import load_llm

        return self._llm if self._llm is not None else load_llm(self.settings)

    @cached_property
    def rewriter(self):
        """The one query rewriter (settings.rewrite); the LLM is loaded only for the 'llm' method."""
        from answer.rewrite import Rewriter

        return Rewriter(self.settings.rewrite, llm=self.llm if self.settings.rewrite == "llm" else None)

    @cached_property
    def answerer(self):
        from answer.answerer import Answerer

        return Answerer(self.settings, llm=self.llm, embedder=self.embedder)

    # -- ranking stages ------------------------------------------------------
    @property
    def has_reranker(self) -> bool:
        return self.settings.reranker != "off"

    def rewrite(self, turns: list[str]):
        """The query to retrieve with (answer.rewrite.Rewrite): injected clauses removed, a follow-up made standalone."""
        from answer.prompt import check_injection

        question = check_injection(turns[-1]).question or turns[-1]
        history = [check_injection(t).question for t in turns[:-1]]
        return self.rewriter.rewrite(question, [h for h in history if h])

    def search_query(self, turns: list[str]) -> str:
        """The query retrieval sees for a conversation: the follow-up rewritten as a standalone question."""
        return self.rewrite(turns).query

    def ranked(self, query: str, *, ablation: str | None = None, top_k: int | None = None) -> tuple[list[Hit], dict]:
        """Hits for one ablation: 'bm25', 'dense', 'hybrid' or 'hybrid+rerank' (default: the configured pipeline)."""
        ablation = ablation or ("hybrid+rerank" if self.has_reranker else "hybrid")
        top_k = top_k or self.settings.top_k
        if ablation in ("bm25", "dense", "hybrid"):
            return self.searcher.search(query, mode=ablation, top_k=top_k)
        if ablation != "hybrid+rerank":
            raise ValueError(f"Unknown ablation {ablation!r}. Supported: ['bm25', 'dense', 'hybrid', 'hybrid+rerank']")
        from retrieval.rerank import rerank

        if self.reranker is None:
            raise ValueError("The 'hybrid+rerank' ablation needs a reranker; GUIDES_RERANKER is 'off'.")
        hits, timings = self.searcher.search(query, mode="hybrid", top_k=max(top_k, self.settings.rerank_candidates))
        t = time.perf_counter()
        hits = rerank(query, hits, reranker=self.reranker, top_k=top_k, weight=self.settings.rerank_weight,
                      candidates=self.settings.rerank_candidates, fusion=self.settings.rerank_fusion)
        timings["rerank"] = (time.perf_counter() - t) * 1000
        return hits, timings

    # -- answering -----------------------------------------------------------
    def ask_stream(self, turns: list[str], *, id: str | None = None) -> Iterator[object]:
        """Yield the evidence quote (answer.answerer.Evidence) and the answer's tokens (Token) as they come,
        ``Checking`` when the written answer goes to the answer check, then one AskResult."""
        from answer.answerer import AnswerResult, Checking, Evidence, Token

        t0 = time.perf_counter()
        turns = self._validate(turns)
        rw = self.rewrite(turns)
        hits, rt = self.ranked(rw.query)
        timings = {"rewrite": rw.ms, "retrieve": rt.get("embed", 0.0) + rt.get("search", 0.0)}
        if "rerank" in rt:
            timings["rerank"] = rt["rerank"]
        t_answer = time.perf_counter()
        for ev in self.answerer.stream(turns[-1], hits, history=turns[:-1], rewrite=rw):
            if isinstance(ev, (Token, Evidence, Checking)):
                yield ev
            elif isinstance(ev, AnswerResult):
                at = ev.timings_ms
                if "first_token" in at:          # the answerer counts from its own start
                    timings["first_token"] = (t_answer - t0) * 1000 + at["first_token"]
                for k in ("gate", "select", "generate", "cite", "check"):
                    if k in at:
                        timings[k] = at[k]
                timings["total"] = (time.perf_counter() - t0) * 1000
                yield AskResult(id=id, question=turns[-1], turns=turns, search_query=rw.query, hits=hits,
                                answer=ev, timings_ms=timings)

    def ask(self, turns: list[str], *, id: str | None = None) -> AskResult:
        res = None
        for ev in self.ask_stream(turns, id=id):
            res = ev
        return res

    def _validate(self, turns) -> list[str]:
        return validate_turns(turns, max_chars=self.settings.max_question_chars)

    def retrieve(self, turns: list[str], *, id: str | None = None, mode: Mode = "hybrid",
                 top_k: int | None = None) -> RetrievalResult:
        t0 = time.perf_counter()
        turns = self._validate(turns)
        query = self.search_query(turns)
        hits, timings = self.ranked(query, ablation=None if mode == "hybrid" else mode, top_k=top_k)
        timings["total"] = (time.perf_counter() - t0) * 1000
        return RetrievalResult(id=id, question=turns[-1], turns=turns, query=query, hits=hits, timings_ms=timings)

    def close(self) -> None:
        if "index" in self.__dict__:
            self.index.close()
        llm = self.__dict__.get("llm")
        if llm is not None and llm is not self._llm and hasattr(llm, "close"):      # an injected LLM is the caller's
            llm.close()
