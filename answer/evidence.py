"""The sentences of the retrieved passages that answer the question: what the LLM reads, and what the user sees first.

Each passage is cut into sentences and lines (``core.text.sentence_spans``); every sentence is
scored against the question: IDF-weighted share of the question's content words it holds, plus
MiniLM cosine when an embedder is given, plus a small bonus for the passage's rank. The best
sentences are kept, in their passage order, within a token budget (the best sentence of the best
passage always); a table row brings its header row along so that its cells keep their meaning.

Example::

    sel = select_sentences("What does QLoRA quantize to?", hits, count_tokens=len, budget_tokens=160)
    sel.excerpts[hits[0].chunk_id]     # 'QLoRA applies LoRA to a 4-bit quantized base model.'
    sel.best                          # Quote(hit=..., text=..., lines=(12, 12))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from core.text import QUESTION_SCAFFOLD_STEMS, content_stems, sentence_spans
from core.types import Hit

GAP = " … "


@dataclass
class Quote:
    """One sentence (or table row) of a passage, with where it is in its guide."""
    hit: Hit
    start: int
    end: int
    score: float = 0.0

    @property
    def text(self) -> str:
        return self.hit.text[self.start:self.end].strip()

    @property
    def lines(self) -> tuple[int, int]:
        return span_lines(self.hit, self.start, self.end)

    def to_json(self) -> dict:
        p = self.hit.payload
        return {"chunk_id": self.hit.chunk_id, "guide": p.get("guide"), "section": p.get("section"),
                "lines": list(self.lines), "text": self.text, "score": round(self.score, 3)}


def span_lines(hit: Hit, start: int, end: int) -> tuple[int, int]:
    """Guide line range of hit.text[start:end] (the chunk keeps its guide's line breaks)."""
    first = int(hit.payload["lines"][0])
    last = int(hit.payload["lines"][1])
    a = first + hit.text.count("\n", 0, start)
    b = first + hit.text.count("\n", 0, max(start, end - 1))
    return min(a, last), min(max(a, b), last)


@dataclass
class Selection:
    excerpts: dict[str, str]                         # chunk_id -> the chosen sentences, in order
    quotes: list[Quote] = field(default_factory=list)   # chosen sentences, best first

    @property
    def best(self) -> Quote | None:
        return self.quotes[0] if self.quotes else None


def _table_header(text: str, start: int) -> tuple[int, int] | None:
    """The header row of the markdown table whose row starts at ``start``, if it is one."""
    line_start = text.rfind("\n", 0, start) + 1
    if not text[line_start:].lstrip().startswith("|"):
        return None
    lines, pos = [], line_start
    while pos > 0:
        prev = text.rfind("\n", 0, pos - 1) + 1
        line = text[prev:pos - 1]
        if not line.lstrip().startswith("|"):
            break
        lines.append((prev, pos - 1))
        pos = prev
    if len(lines) < 2:
        return None
    head = lines[-1]
    return head if head[0] != line_start else None


def score_sentences(question: str, hits: Sequence[Hit], *, embedder=None) -> list[Quote]:
    """Every sentence of ``hits`` scored against ``question``, best first."""
    cands = [Quote(hit=h, start=a, end=b) for h in hits for a, b in sentence_spans(h.text)]
    if not cands:
        return []
    q = [s for s in dict.fromkeys(content_stems(question)) if s not in QUESTION_SCAFFOLD_STEMS] or content_stems(question)
    stems = [set(content_stems(c.text)) for c in cands]
    n = len(cands)
    idf = {s: math.log(1 + n / (1 + sum(s in st for st in stems))) for s in q}
    total = sum(idf.values()) or 1.0
    lex = np.array([sum(idf[s] for s in q if s in st) / total for st in stems])
    cos = np.zeros(n)
    if embedder is not None:
        vecs = embedder.embed([question] + [c.text for c in cands])
        cos = np.clip(vecs[1:] @ vecs[0], 0.0, None)
    rank_of = {id(h): r for r, h in enumerate(hits)}
    bonus = np.array([0.1 / (1 + rank_of[id(c.hit)]) for c in cands])
    short = np.array([0.5 if len(st) < 2 else 1.0 for st in stems])      # a bare heading or "Pros:" says little
    scores = (0.5 * lex + 0.5 * cos + bonus) * short if embedder is not None else (lex + bonus) * short
    for c, s in zip(cands, scores):
        c.score = float(s)
    return sorted(cands, key=lambda c: -c.score)


def select_sentences(question: str, hits: Sequence[Hit], *, count_tokens: Callable[[str], int],
                     budget_tokens: int, embedder=None) -> Selection:
    """The best sentences of ``hits`` within ``budget_tokens`` (see the module docstring)."""
    ranked = score_sentences(question, hits, embedder=embedder)
    chosen: dict[str, list[tuple[int, int]]] = {}
    quotes: list[Quote] = []
    used = 0
    first_hit = hits[0].chunk_id if hits else None
    must = next((c for c in ranked if c.hit.chunk_id == first_hit), None)
    order = ([must] if must else []) + [c for c in ranked if c is not must]
    for c in order:
        if c.score <= 0 and quotes:
            break
        spans = [(c.start, c.end)]
        head = _table_header(c.hit.text, c.start)
        if head and head not in chosen.get(c.hit.chunk_id, []):
            spans.insert(0, head)
        cost = sum(count_tokens(c.hit.text[a:b]) for a, b in spans) + 2
        if quotes and used + cost > budget_tokens:
            continue
        used += cost
        quotes.append(c)
        chosen.setdefault(c.hit.chunk_id, []).extend(spans)
    excerpts = {}
    for h in hits:
        spans = sorted(set(chosen.get(h.chunk_id, [])))
        if not spans:
            continue
        parts, prev_end = [], None
        for a, b in spans:
            if prev_end is not None:
                between = h.text[prev_end:a]
                rows = h.text[a:b].lstrip().startswith("|") and h.text[:prev_end].rsplit("\n", 1)[-1].lstrip().startswith("|")
                parts.append("\n" if rows or (between.strip() == "" and between.count("\n") <= 1) else GAP)
            parts.append(h.text[a:b].strip())
            prev_end = b
        excerpts[h.chunk_id] = "".join(parts)
    quotes.sort(key=lambda c: -c.score)
    return Selection(excerpts=excerpts, quotes=quotes)
