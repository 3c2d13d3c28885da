"""Decide when to refuse: before generation (weak retrieval) and after it (the model declines).

Before generation three signals are computed from the question and the passages:

* ``retrieval``: the reranker's score of the top hit when ``hit.scores['rerank']`` exists (gated
  only when ``min_rerank`` is set, since its scale belongs to the reranker), else the fused score
  (reported, not gated: RRF scores are rank-based and almost constant for the top hit);
* ``max_cosine``: the largest cosine between the question and a passage (MiniLM, our own
  signal, so it works whatever retrieval returns);
* ``missing_entities``: names in the question (capitalised or mixed-case words such as
  ``Dijkstra``, ``MI300X``) that none of the passages mention.

Refuse when max_cosine < ``min_cosine`` (nothing related), or when a named entity is missing
and max_cosine < ``entity_cosine`` (the passages are about something else). After generation,
refuse when the model says it cannot answer or when no sentence of its answer is supported
by a passage (it answered from memory). Thresholds were calibrated on eval/golden.jsonl; see
answer/MEASUREMENTS.md.

Example::

    gate = RefusalGate(embedder=emb)
    verdict = gate.check("What is the capital of Mongolia?", hits)
    verdict.refuse, verdict.reason, verdict.signals["max_cosine"]
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from answer.prompt import passage_header
from core.text import NOT_NAMES, clause_spans, normalise_for_match, sentence_spans
from core.types import Hit


def named_entities(question: str) -> list[str]:
    """Capitalised or mixed-case words that are not sentence-initial: 'LangChain', 'MI300X', 'Dijkstra'.
    A word after a colon or semicolon counts as initial too ("Context: Explain LoRA")."""
    out: list[str] = []
    for a, b in clause_spans(question):
        words = question[a:b].split()
        for i, raw in enumerate(words):
            w = re.sub(r"['’]s$", "", raw.strip("?,.;:!()[]{}\"'“”‘’"))
            if not w or not any(c.isupper() for c in w) or w.lower() in NOT_NAMES:
                continue
            if i == 0 and w[1:] == w[1:].lower():
                continue        # a sentence-initial ordinary word ("Explain"); "LoRA" or "GPT" still count
            out.append(w)
    return list(dict.fromkeys(out))


def _mentions(blob: str, entity: str) -> bool:
    """Whether normalised ``blob`` (padded with spaces) contains the entity as a word prefix."""
    e = normalise_for_match(entity)
    if not e:
        return True
    if f" {e}" in blob or f" {e.rstrip('s')}" in blob:
        return True
    if "-" in entity:       # 'PPO-based': enough that the capitalised parts appear
        parts = [p for p in entity.split("-") if any(c.isupper() for c in p)]
        return bool(parts) and all(f" {normalise_for_match(p)}" in blob for p in parts)
    return False


def missing_entities(question: str, hits: Sequence[Hit]) -> list[str]:
    blob = " " + normalise_for_match(" ".join(h.text + " " + h.payload.get("section", "") for h in hits)) + " "
    return [e for e in named_entities(question) if not _mentions(blob, e)]


def retrieval_confidence(hits: Sequence[Hit]) -> tuple[str, float | None]:
    """(source, value) of the top hit: the reranker's score if present, else the fused/first score."""
    if not hits:
        return "none", None
    s = hits[0].scores or {}
    if "rerank" in s:
        return "rerank", float(s["rerank"])
    for key in ("fused", "hybrid", "dense", "bm25"):
        if key in s:
            return key, float(s[key])
    return "score", float(hits[0].score)


_REFUSAL_PATTERNS = re.compile(
    r"(guides? (do|does) not (cover|contain|mention)|guides? don['’]t (cover|contain|mention)|"
    r"passages? (do|does) not (contain|cover|mention|provide|answer)|passages? don['’]t (contain|cover|mention|provide)|"
    r"not (covered|mentioned|provided|included) in the (passages?|guides?)|"
    r"\bno (information|mention)\b.{0,40}\b(passages?|guides?)|"
    r"i (do not|don['’]t) know|i cannot answer|i can['’]t answer|unable to answer|cannot be answered)",
    re.I,
)


def model_declined(answer: str) -> bool:
    """True when the reply's first sentence says the passages lack the answer."""
    text = " ".join(answer.split())
    if not text:
        return True
    m = _REFUSAL_PATTERNS.search(text)
    if not m:
        return False
    first = sentence_spans(text)
    return m.start() < (first[0][1] if first else len(text))


UNSUPPORTED_OPENING = "The guides don't seem to cover this: the answer the model wrote was not supported by their passages."


def refusal_text(hits: Sequence[Hit], *, reason: str | None = None, n_sections: int = 3,
                 after_generation: bool = False) -> str:
    """'The guides don't cover this.' plus the nearest sections.

    ``after_generation``: the retrieval signals let the question through but the model's answer failed
    the checks; the guides may still cover the topic (the evidence was ranked too low, or the model
    missed it), so the text says what is known rather than stating the guides lack it.
    """
    lines = [UNSUPPORTED_OPENING if after_generation else "The guides don't cover this."]
    if reason and not after_generation:
        lines[0] = f"The guides don't cover this ({reason})."
    secs = list(dict.fromkeys(passage_header(h) for h in hits))[:n_sections]
    if secs:
        lines.append("Nearest sections: " + "; ".join(secs) + ".")
    return " ".join(lines)


@dataclass
class Verdict:
    refuse: bool
    reason: str | None = None
    signals: dict = field(default_factory=dict)


class RefusalGate:
    """Pre-generation refusal from retrieval confidence; thresholds are the calibrated defaults."""

    def __init__(self, *, embedder=None, min_cosine: float = 0.25, entity_cosine: float = 0.5,
                 min_rerank: float | None = None, top_n: int = 4, cache_size: int = 2048):
        self.embedder = embedder
        self.min_cosine = min_cosine
        self.entity_cosine = entity_cosine
        self.min_rerank = min_rerank
        self.top_n = top_n
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _passage_vecs(self, hits: Sequence[Hit]) -> np.ndarray:
        """Passage vectors, cached by chunk id and text (chunks recur across questions)."""
        keys = [f"{h.chunk_id}:{hash(h.text)}" for h in hits]
        with self._lock:
            todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            vecs = self.embedder.embed([hits[i].text for i in todo])
            with self._lock:
                for i, v in zip(todo, vecs):
                    self._cache[keys[i]] = v
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        with self._lock:
            for k in keys:
                self._cache.move_to_end(k)
            return np.stack([self._cache[k] for k in keys])

    def max_cosine(self, question: str, hits: Sequence[Hit]) -> float | None:
        if self.embedder is None or not hits:
            return None
        q = self.embedder.embed([question])[0]
        return float((self._passage_vecs(hits) @ q).max())

    def check(self, question: str, hits: Sequence[Hit]) -> Verdict:
        hits = list(hits)[:self.top_n]
        if not hits:
            return Verdict(True, "no passage was retrieved", {})
        src, conf = retrieval_confidence(hits)
        cos = self.max_cosine(question, hits)
        missing = missing_entities(question, hits)
        signals = {"retrieval_source": src, "retrieval_score": conf, "max_cosine": cos,
                   "missing_entities": missing}
        if src == "rerank" and self.min_rerank is not None and conf < self.min_rerank:
            return Verdict(True, f"the best passage's rerank score {conf:.3f} is below {self.min_rerank}", signals)
        if cos is not None and cos < self.min_cosine:
            return Verdict(True, f"no passage is close to the question (max cosine {cos:.2f} < {self.min_cosine})", signals)
        if missing and (cos is None or cos < self.entity_cosine):
            names = ", ".join(missing[:3])
            return Verdict(True, f"no passage mentions {names}", signals)
        return Verdict(False, None, signals)
