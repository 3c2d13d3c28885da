"""Chunk a guide along its structure so that every chunk fits the embedder's window.

Rules, in order of precedence:
1. every chunk, with its heading context prepended, fits ``max_tokens`` (the embedder window);
2. a chunk never crosses a top-level section;
3. a unit (table row set, code block, question with its answer, paragraph, list) is never
   split when it fits; one that does not fit is split between lines (a table repeats its
   header row), and a single over-long line between sentences;
4. units of one section are packed up to ``target_tokens``;
5. pieces smaller than ``min_tokens`` are merged with a neighbour of the same top-level section.

Example::

    chunks = chunk_guide(parse_guide(text, "a.md"), "a.md", counter=embedder.count_tokens)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from core.types import SEP, Chunk

from .structure import GuideStructure, Section, Unit

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass
class _Piece:
    lines: list[str]
    start: int
    end: int
    kind: str

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Chunker:
    """Packs a guide's units into chunks that fit the window; see the module docstring."""

    def __init__(self, *, counter: TokenCounter, max_tokens: int = 256, target_tokens: int = 200, min_tokens: int = 48):
        if target_tokens > max_tokens:
            raise ValueError(f"target_tokens ({target_tokens}) must not exceed max_tokens ({max_tokens})")
        self.counter = counter
        self.max_tokens = max_tokens
        self.target_tokens = target_tokens
        self.min_tokens = min_tokens

    # -- token helpers -------------------------------------------------------
    def _size(self, head: str, text: str) -> int:
        return self.counter([f"{head}\n{text}"])[0]

    # -- splitting units that do not fit ---------------------------------------
    def _split_line(self, head: str, line: str, lineno: int, kind: str) -> list[_Piece]:
        """Split one over-long line between sentences, then between words."""
        parts = re.split(r"(?<=[.!?;])\s+", line)
        out: list[_Piece] = []
        cur = ""
        for part in parts:
            cand = f"{cur} {part}".strip()
            if self._size(head, cand) <= self.max_tokens:
                cur = cand
                continue
            if cur:
                out.append(_Piece([cur], lineno, lineno, kind))
            if self._size(head, part) <= self.max_tokens:
                cur = part
            else:                                   # one sentence longer than the window
                words, cur = part.split(), ""
                for w in words:
                    cand = f"{cur} {w}".strip()
                    if self._size(head, cand) <= self.max_tokens:
                        cur = cand
                    else:
                        if cur:
                            out.append(_Piece([cur], lineno, lineno, kind))
                        cur = w
        if cur:
            out.append(_Piece([cur], lineno, lineno, kind))
        return out

    def _split_unit(self, head: str, u: Unit) -> list[_Piece]:
        if self._size(head, u.text) <= self.max_tokens:
            return [_Piece(list(u.lines), u.start, u.end, u.kind)]
        header: list[str] = []
        body = list(enumerate(u.lines))
        if u.kind == "table" and len(u.lines) > 2 and re.match(r"^\s*\|[\s:|-]+\|\s*$", u.lines[1]):
            header, body = u.lines[:2], body[2:]
        pieces: list[_Piece] = []
        cur: list[tuple[int, str]] = []

        def flush():
            if cur:
                lines = header + [l for _, l in cur] if header else [l for _, l in cur]
                pieces.append(_Piece(lines, u.start + cur[0][0], u.start + cur[-1][0], u.kind))

        for idx, line in body:
            cand = header + [l for _, l in cur] + [line]
            if self._size(head, "\n".join(cand)) <= self.max_tokens:
                cur.append((idx, line))
                continue
            flush()
            cur = []
            if self._size(head, "\n".join(header + [line])) <= self.max_tokens:
                cur = [(idx, line)]
            else:
                pieces.extend(self._split_line(head, line, u.start + idx, u.kind))
        flush()
        return pieces

    # -- packing -------------------------------------------------------------
    def _pack_section(self, struct: GuideStructure, rel: str, sec: Section) -> list[Chunk]:
        proto = Chunk(rel, struct.title, list(sec.path), 0, 0, "", top=sec.top)
        head = proto.section
        pieces = [p for u in sec.units for p in self._split_unit(head, u)]
        chunks: list[Chunk] = []
        cur: list[_Piece] = []

        def emit():
            if cur:
                text = "\n\n".join(p.text for p in cur)
                chunks.append(Chunk(rel, struct.title, list(sec.path), cur[0].start, cur[-1].end, text,
                                    top=sec.top, kinds=sorted({p.kind for p in cur})))

        for p in pieces:
            if cur:
                joined = "\n\n".join([*(q.text for q in cur), p.text])
                if self._size(head, joined) <= self.target_tokens:
                    cur.append(p)
                    continue
                emit()
            cur = [p]
        emit()
        return chunks

    def _merge(self, a: Chunk, b: Chunk) -> Chunk | None:
        """a followed by b as one chunk under their common section, or None if it would not fit."""
        common: list[str] = []
        for x, y in zip(a.section_path, b.section_path):
            if x != y:
                break
            common.append(x)
        a_extra = a.section_path[len(common):]
        b_extra = b.section_path[len(common):]
        a_text = "\n".join([*(t for t in a_extra), a.text]) if a_extra else a.text
        b_text = "\n".join([*(t for t in b_extra), b.text]) if b_extra else b.text
        m = Chunk(a.guide, a.guide_title, common, a.start, b.end, f"{a_text}\n\n{b_text}", top=a.top,
                  kinds=sorted(set(a.kinds) | set(b.kinds)))
        m.n_tokens = self.counter([m.embed_text])[0]
        return m if m.n_tokens <= self.max_tokens else None

    def chunk(self, struct: GuideStructure, rel: str) -> list[Chunk]:
        chunks = [c for sec in struct.sections for c in self._pack_section(struct, rel, sec)]
        for c in chunks:
            c.n_tokens = self.counter([c.embed_text])[0]
        # Merge tiny pieces with a neighbour in the same top-level section.
        i = 0
        while i < len(chunks):
            c = chunks[i]
            if c.n_tokens < self.min_tokens:
                nxt = chunks[i + 1] if i + 1 < len(chunks) else None
                prv = chunks[i - 1] if i > 0 else None
                if nxt is not None and nxt.top == c.top and (m := self._merge(c, nxt)):
                    chunks[i : i + 2] = [m]
                    continue
                if prv is not None and prv.top == c.top and (m := self._merge(prv, c)):
                    chunks[i - 1 : i + 1] = [m]
                    i -= 1
                    continue
            i += 1
        seen: dict[str, int] = {}
        for c in chunks:
            key = SEP.join(c.section_path)
            c.ordinal = seen.get(key, 0)
            seen[key] = c.ordinal + 1
        return chunks


def chunk_guide(struct: GuideStructure, rel: str, *, counter: TokenCounter, max_tokens: int = 256,
                target_tokens: int = 200, min_tokens: int = 48) -> list[Chunk]:
    return Chunker(counter=counter, max_tokens=max_tokens, target_tokens=target_tokens, min_tokens=min_tokens).chunk(struct, rel)
