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

from guides_qa.config import Settings
from ingest.embed import Embedder, load_embedder
from retrieval.search import Hit, HybridSearcher, IndexHandle, Mode


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


def history_query(turns: list[str]) -> str:
    """Until the LLM rewriter exists: the last question, preceded by the previous one for context."""
    if len(turns) == 1:
        return turns[-1]
    return f"{turns[-2]} {turns[-1]}"


class Pipeline:
    """Loads each model and the index once per process, on first use; thread-safe."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None):
        self.settings = settings
        self._embedder = embedder
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = load_embedder(self.settings.embed_model)
            return self._embedder

    @cached_property
    def index(self) -> IndexHandle:
        return IndexHandle(self.settings)

    @cached_property
    def searcher(self) -> HybridSearcher:
        return HybridSearcher(self.settings, embedder=self.embedder, index=self.index)

    # -- ranking stages ------------------------------------------------------
    @property
    def has_reranker(self) -> bool:
        return self.settings.reranker != "off"

    def search_query(self, turns: list[str]) -> str:
        """The query retrieval sees for a conversation."""
        return history_query(turns)

    def ranked(self, query: str, *, ablation: str = "hybrid", top_k: int | None = None) -> tuple[list[Hit], dict]:
        """Hits for one ablation: 'bm25', 'dense', 'hybrid' or 'hybrid+rerank'."""
        if ablation in ("bm25", "dense", "hybrid"):
            return self.searcher.search(query, mode=ablation, top_k=top_k)
        raise ValueError(f"Unknown ablation {ablation!r}. Supported: ['bm25', 'dense', 'hybrid', 'hybrid+rerank']")

    def retrieve(self, turns: list[str], *, id: str | None = None, mode: Mode = "hybrid",
                 top_k: int | None = None) -> RetrievalResult:
        t0 = time.perf_counter()
        if not isinstance(turns, list) or not turns:
            raise InputError("A conversation needs at least one question in 'turns'.")
        turns = [validate_question(t, max_chars=self.settings.max_question_chars,
                                   where="question" if i == len(turns) - 1 else f"turn {i + 1}")
                 for i, t in enumerate(turns)]
        query = history_query(turns)
        hits, timings = self.searcher.search(query, mode=mode, top_k=top_k)
        timings["total"] = (time.perf_counter() - t0) * 1000
        return RetrievalResult(id=id, question=turns[-1], turns=turns, query=query, hits=hits, timings_ms=timings)

    def close(self) -> None:
        if "index" in self.__dict__:
            self.index.close()
