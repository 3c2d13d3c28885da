"""The sentences of the retrieved passages that answer the question: what the LLM reads, and what the user sees first.

Each passage is cut into sentences and lines (``core.text.sentence_spans``); every sentence is
scored against the question: IDF-weighted share of the question's content words it holds (a word
found only in the sentence's context lines, see below, counts half), plus MiniLM cosine of the
context and sentence when an embedder is given, plus a small bonus for the passage's rank. The best
sentences are kept, in their passage order, within a token budget (the best sentence of the best
passage always). A sentence brings the context lines along that keep its meaning: a table row its
header row; a list item those of its parent items and of the line leading into the list that hold
a question word ("- **TensorRT-LLM:**" above "  - **Cons:** CUDA-only, complex setup", not
"**Expected Answer:**").

Two rules, off by default, keep the facts of a list or table together within the budget: a sentence's
score moves ``block_weight`` of the way to the best score of its block of lines (``pull_to_block``: the
rest of the table whose best row answers outranks a stray sentence of the fourth passage), and with
``skip_asking`` a line that asks ("**Q24: Explain ...**") is never chosen. Together (0.5) they put every
fact in the prompt for 106 of 123 dev questions instead of 100, yet the answers were not more often right
(test part 37 -> 35 of 65, tune 37 -> 39 of 58: answer/MEASUREMENTS.md), so they are not the default.

Example::

    sel = select_sentences("What does QLoRA quantize to?", hits, count_tokens=len, budget_tokens=160)
    sel.excerpts[hits[0].chunk_id]     # 'QLoRA applies LoRA to a 4-bit quantized base model.'
    sel.best                          # Quote(hit=..., text=..., lines=(12, 12))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from core.text import LIST_ITEM, QUESTION_SCAFFOLD_STEMS, content_stems, sentence_spans
from core.types import Hit

GAP = " … "
CONTEXT_WEIGHT = 0.5      # a question word found only in a sentence's context lines, against one in the sentence
RANK_BONUS = 0.1          # a sentence of the passage ranked r gets RANK_BONUS / (1 + r)
NEAR_BEST = 0.8           # best_evidence: sentences scoring at least this share of the best one
BLOCK_PULL = 0.0          # pull_to_block's share; 0.5 keeps more facts (106 vs 100/123) but answers were not more right


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




def _line(text: str, pos: int) -> tuple[int, int]:
    """(start, end) of the line holding ``pos``."""
    a = text.rfind("\n", 0, pos) + 1
    b = text.find("\n", pos)
    return a, (len(text) if b < 0 else b)


def _prev_line(text: str, line_start: int) -> tuple[int, int] | None:
    """The nearest non-blank line above the line starting at ``line_start``."""
    pos = line_start - 1
    while pos > 0:
        a = text.rfind("\n", 0, pos) + 1
        if text[a:pos].strip():
            return a, pos
        pos = a - 1
    return None


def context_spans(text: str, start: int) -> list[tuple[int, int]]:
    """The lines that give the sentence at ``start`` its meaning, top first: a table row's header row;
    a list item's parent items (each less indented, up to the outermost); the line that leads into a
    list ("**Cons:**", "Common techniques:"). Empty for a sentence of a plain paragraph."""
    head = _table_header(text, start)
    if head:
        return [head]
    a, b = _line(text, start)
    m = LIST_ITEM.match(text[a:b])
    if not m:
        return []
    out, indent, pos = [], len(m.group(1).expandtabs(4)), a
    while (prev := _prev_line(text, pos)) is not None:
        pa, pb = prev
        line = text[pa:pb]
        pm = LIST_ITEM.match(line)
        if pm is None:                                   # the lead-in of the list, when it introduces it
            if line.rstrip().rstrip("*").endswith(":"):
                out.append(prev)
            break
        if len(pm.group(1).expandtabs(4)) < indent:
            out.append(prev)
            indent = len(pm.group(1).expandtabs(4))
        pos = pa
    return out[::-1]


def block_start(text: str, pos: int) -> int:
    """Start of the run of non-blank lines holding ``pos``: a table, a list without blank lines, a paragraph."""
    a = text.rfind("\n", 0, pos) + 1
    while a > 0:
        prev = text.rfind("\n", 0, a - 1) + 1
        if not text[prev:a - 1].strip():
            break
        a = prev
    return a


def pull_to_block(cands: Sequence[Quote], weight: float, *, by: str = "lines") -> None:
    """Move each sentence's score ``weight`` of the way towards the best score of its block (``block_start``
    runs of lines, or ``by="context"``: the same table header or list parent), so the rest of a list or
    table whose best line answers the question outranks a stray sentence of another passage."""
    if weight <= 0:
        return
    def key(c: Quote):
        if by == "context":
            ctx = context_spans(c.hit.text, c.start)
            return (c.hit.chunk_id, ctx[-1] if ctx else block_start(c.hit.text, c.start))
        return (c.hit.chunk_id, block_start(c.hit.text, c.start))
    best: dict = {}
    for c in cands:
        k = key(c)
        best[k] = max(best.get(k, 0.0), c.score)
    for c in cands:
        c.score += weight * (best[key(c)] - c.score)


def score_sentences(question: str, hits: Sequence[Hit], *, embedder=None, context_weight: float = CONTEXT_WEIGHT) -> list[Quote]:
    """Every sentence of ``hits`` scored against ``question``, best first. A question word found only in
    the sentence's context (``context_spans``) counts ``context_weight`` of one found in the sentence."""
    cands = [Quote(hit=h, start=a, end=b) for h in hits for a, b in sentence_spans(h.text)]
    if not cands:
        return []
    q = [s for s in dict.fromkeys(content_stems(question)) if s not in QUESTION_SCAFFOLD_STEMS] or content_stems(question)
    stems = [set(content_stems(c.text)) for c in cands]
    ctx_text = [" ".join(c.hit.text[a:b] for a, b in context_spans(c.hit.text, c.start)) for c in cands]
    ctx = [set(content_stems(t)) - st if t else set() for t, st in zip(ctx_text, stems)]
    n = len(cands)
    idf = {s: math.log(1 + n / (1 + sum(s in st for st in stems))) for s in q}
    total = sum(idf.values()) or 1.0
    lex = np.array([(sum(idf[s] for s in q if s in st) + context_weight * sum(idf[s] for s in q if s in cx)) / total
                    for st, cx in zip(stems, ctx)])
    cos = np.zeros(n)
    if embedder is not None:
        texts = [(t.strip() + " " + c.text) if (t and context_weight > 0) else c.text for t, c in zip(ctx_text, cands)]
        vecs = embedder.embed([question] + texts)
        cos = np.clip(vecs[1:] @ vecs[0], 0.0, None)
    rank_of = {id(h): r for r, h in enumerate(hits)}
    bonus = np.array([RANK_BONUS / (1 + rank_of[id(c.hit)]) for c in cands])
    short = np.array([0.5 if len(st) < 2 else 1.0 for st in stems])      # a bare heading or "Pros:" says little
    scores = (0.5 * lex + 0.5 * cos + bonus) * short if embedder is not None else (lex + bonus) * short
    for c, s in zip(cands, scores):
        c.score = float(s)
    return sorted(cands, key=lambda c: -c.score)


def select_sentences(question: str, hits: Sequence[Hit], *, count_tokens: Callable[[str], int],
                     budget_tokens: int, embedder=None, block_weight: float = BLOCK_PULL, block_by: str = "lines",
                     skip_asking: bool = False) -> Selection:
    """The best sentences of ``hits`` within ``budget_tokens`` (see the module docstring)."""
    ranked = score_sentences(question, hits, embedder=embedder)
    if skip_asking:
        ranked = [c for c in ranked if not is_asking(c.text)] or ranked
    pull_to_block(ranked, block_weight, by=block_by)
    ranked.sort(key=lambda c: -c.score)
    q_stems = set(content_stems(question)) - QUESTION_SCAFFOLD_STEMS
    chosen: dict[str, list[tuple[int, int]]] = {}
    quotes: list[Quote] = []
    used = 0
    first_hit = hits[0].chunk_id if hits else None
    must = next((c for c in ranked if c.hit.chunk_id == first_hit), None)
    order = ([must] if must else []) + [c for c in ranked if c is not must]
    for c in order:
        if c.score <= 0 and quotes:
            break
        if any(a <= c.start and c.end <= b for a, b in chosen.get(c.hit.chunk_id, [])):
            continue                                     # already in, as another sentence's context line
        spans = [sp for sp in context_spans(c.hit.text, c.start) if sp not in chosen.get(c.hit.chunk_id, [])
                 and (c.hit.text[sp[0]:sp[1]].lstrip().startswith("|") or q_stems & set(content_stems(c.hit.text[sp[0]:sp[1]])))]
        spans.append((c.start, c.end))
        cost = sum(count_tokens(c.hit.text[a:b]) for a, b in spans) + 2
        if quotes and used + cost > budget_tokens:
            continue
        used += cost
        quotes.append(c)
        chosen.setdefault(c.hit.chunk_id, []).extend(spans)
    excerpts = {}
    for h in hits:
        spans: list[tuple[int, int]] = []
        for a, b in sorted(set(chosen.get(h.chunk_id, []))):       # a context line may hold a chosen sentence
            if spans and a < spans[-1][1]:
                spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
            else:
                spans.append((a, b))
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


_MARKUP = re.compile(r"[*_#>`|•\-\s]+")


def is_statement(text: str) -> bool:
    """False for a line that asks or introduces rather than states: a question heading ("**Q22: What are the
    trade-offs ...?**") or a label ("- **TensorRT-LLM (NVIDIA):**"). They match a question's words best, yet
    answer nothing."""
    t = _MARKUP.sub(" ", text).strip()
    return bool(t) and not t.endswith(("?", ":"))


_ASKING = re.compile(r"^\W*(Q\d+\s*[:.]|.*\?\W*$)")


def is_asking(text: str) -> bool:
    """A line that asks rather than answers: "**Q24: Explain the differences ...**", "What is RAG?"."""
    return bool(_ASKING.match(" ".join(text.split())))


def best_evidence(quotes: Sequence[Quote], k: int) -> list[Quote]:
    """The sentences an answer should state: of ``quotes`` (best first) that are statements (``is_statement``;
    all of them if none is), the best ``k`` that score at least NEAR_BEST of the best one. A weak runner-up
    (another topic's sentence) is not evidence an answer must cover."""
    quotes = [q for q in quotes if is_statement(q.text)] or list(quotes)
    if not quotes:
        return []
    floor = NEAR_BEST * quotes[0].score
    return [q for q in quotes[:k] if q is quotes[0] or q.score >= floor]


def quote_coverage(answer: str, quotes: Sequence[Quote], question: str) -> list[float]:
    """For each quote, the share of its content words the answer states, words of the question left out
    (they say what was asked, not what the guides answer). A quote with no other content word counts 1.0.

    Low coverage of the best evidence sentences is the sign of an incomplete answer that per-sentence
    verification cannot see: "TensorRT-LLM is CUDA-only [1]" is verified against "Cons: CUDA-only, complex
    setup, vendor lock-in", yet it leaves out two of the three drawbacks (answer/MEASUREMENTS.md).
    """
    asked = set(content_stems(question))
    stated = set(content_stems(answer))
    out = []
    for q in quotes:
        words = set(content_stems(q.text)) - asked
        out.append(len(words & stated) / len(words) if words else 1.0)
    return out
