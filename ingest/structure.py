"""Recover a guide's structure: its title, its sections, and the units inside each section.

Markdown guides are parsed with markdown-it-py (CommonMark plus tables): its block tokens
carry line ranges, so headings (ATX and setext), fenced and indented code, tables, lists and
paragraphs are found the way a markdown renderer sees them. Plain-text guides (a copied web page) have none, so
the titles a reader sees are recovered instead: numbered section titles ("5. Retrieval-
Augmented Generation (RAG)") that continue the numbering, and short title lines standing
alone between blank lines with body text after them.

A *unit* is the smallest piece the chunker keeps whole when it fits: a paragraph, a list,
a table, a fenced code block, or a question together with its answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePosixPath

from markdown_it import MarkdownIt
from markdown_it.token import Token

_FENCE = re.compile(r"^\s*(```|~~~)")
_NUMBERED_TITLE = re.compile(r"^(\d{1,2})\.\s+(\S.{0,78})$")
_MATHY = re.compile(r"[=≈∝^√²→|•·]")
_QUESTION_LINE = re.compile(r"^\s*(\*\*)?\s*(Q\d+[:.)]|Question\s*\d*[:.])", re.I)
_TOC_TITLES = {"table of contents", "contents", "toc"}
_ACRONYMS = {"llm", "llms", "rag", "qa", "nlp", "ml", "ai", "gpt"}


@dataclass
class Unit:
    kind: str                 # para | list | table | code | qa
    lines: list[str]          # the unit's source lines (cleaned), in order
    start: int                # 1-based line number of the first line
    end: int                  # 1-based line number of the last line

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Section:
    path: list[str]           # titles from the top-level section down; [] = before the first heading
    top: int                  # index of the top-level section this belongs to
    start: int                # first line of the section (its heading line)
    units: list[Unit] = field(default_factory=list)


@dataclass
class GuideStructure:
    title: str
    sections: list[Section]
    format: str               # markdown | plaintext


def title_from_filename(rel: str) -> str:
    words = re.split(r"[-_\s]+", PurePosixPath(rel).stem)
    return " ".join(w.upper() if w.lower() in _ACRONYMS else w.capitalize() for w in words if w)


# --------------------------------------------------------------------------- headings


@dataclass
class _Heading:
    line: int      # 0-based line of the heading
    level: int     # 1 = top-level section, 2 = subsection, ... (already normalised)
    title: str
    body: int = -1  # 0-based line where the section body starts (after a setext underline too)

    def __post_init__(self):
        if self.body < 0:
            self.body = self.line + 1


@dataclass
class _Block:
    kind: str      # heading | para | list | table | code | hr
    start: int     # 0-based first line
    end: int       # 0-based line after the last
    level: int = 0  # heading level (1-6)
    title: str = ""


# Block tokens and the kind each becomes: top-level blocks, except that a top-level list gives
# one block per item (items with no blank line between them rejoin as one unit).
_BLOCK_KINDS = {"paragraph_open": "para", "list_item_open": "list", "table_open": "table", "fence": "code", "code_block": "code", "blockquote_open": "para",
                "html_block": "para", "hr": "hr", "heading_open": "heading"}


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def _inline_text(tok: Token) -> str:
    """Plain text of an inline token: emphasis, links and code marks dropped, as a reader sees it."""
    parts = []
    for child in tok.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_text(child))
    return "".join(parts).strip().rstrip(":").strip()


def _markdown_blocks(text: str) -> list[_Block]:
    """The document's top-level blocks in order, with their line ranges (headings inside lists stay in the list)."""
    tokens = _markdown().parse(text)
    lines = text.split("\n")
    blocks: list[_Block] = []
    for i, tok in enumerate(tokens):
        depth = 1 if tok.type == "list_item_open" else 0
        if tok.level != depth or tok.nesting == -1 or tok.type not in _BLOCK_KINDS:
            continue
        kind = _BLOCK_KINDS[tok.type]
        start, end = tok.map
        while end > start + 1 and not lines[end - 1].strip():   # a list item's range takes the blank line after it
            end -= 1
        if kind == "heading":
            blocks.append(_Block(kind, start, end, int(tok.tag[1]), _inline_text(tokens[i + 1])))
        else:
            blocks.append(_Block(kind, start, end))
    return blocks


def _markdown_headings(blocks: list[_Block]) -> tuple[_Heading | None, list[_Heading]]:
    raw = [b for b in blocks if b.kind == "heading"]
    title = None
    if sum(1 for b in raw if b.level == 1) == 1 and raw and raw[0].level == 1:
        title = _Heading(raw[0].start, 0, raw[0].title, raw[0].end)
        raw = raw[1:]
    if not raw:
        return title, []
    # Top level: the shallowest level used by a heading other than the title.
    top = min(b.level for b in raw)
    return title, [_Heading(b.start, b.level - top + 1, b.title, b.end) for b in raw]


def _plaintext_headings(lines: list[str]) -> tuple[_Heading | None, list[_Heading]]:
    def blank(i: int) -> bool:
        return i < 0 or i >= len(lines) or not lines[i].strip()

    heads: list[_Heading] = []
    title = None
    next_number = 1
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or line != line.lstrip() or not blank(i - 1) or not blank(i + 1):
            continue
        if len(s) > 80 or len(s.split()) > 12:
            continue
        m = _NUMBERED_TITLE.match(s)
        if m and int(m.group(1)) == next_number:
            heads.append(_Heading(i, 1, s))
            next_number += 1
            continue
        if s[-1] in ".:,;!" or ": " in s or _MATHY.search(s) or not (s[0].isupper() or s[0].isdigit()):
            continue
        if m:                    # a numbered line that does not continue the numbering: a list item
            continue
        if title is None and not heads:
            title = _Heading(i, 0, s)   # the first title line of the page is the guide's title
            continue
        # Two blank lines before an unnumbered title mark a top-level section.
        level = 1 if blank(i - 2) else 2
        heads.append(_Heading(i, level, s))
    return title, heads


# --------------------------------------------------------------------------- units


def _markdown_units(blocks: list[_Block], lines: list[str], lo: int, hi: int) -> list[Unit]:
    """Units of the markdown blocks that start in lines[lo:hi].

    Blocks with no blank line between them (an "**Answer:**" line and the list under it) stay
    one unit, of the first block's kind; a code block is always a unit of its own; thematic
    breaks (``---``) separate, they are not text.
    """
    units: list[Unit] = []
    prev: _Block | None = None
    for b in (b for b in blocks if lo <= b.start < hi):
        glued = prev is not None and prev.end == b.start and {prev.kind, b.kind}.isdisjoint({"heading", "hr", "code"})
        if b.kind in ("heading", "hr"):
            pass
        elif glued and units:
            u = units[-1]
            units[-1] = Unit(u.kind, u.lines + lines[b.start : b.end], u.start, b.end)
        else:
            units.append(Unit(b.kind, lines[b.start : b.end], b.start + 1, b.end))
        prev = b
    return _glue_questions(units)


def _plaintext_units(lines: list[str], first: int) -> list[Unit]:
    """Split a plain-text section body (lines[0] is source line first+1) into units by blank lines."""
    units: list[Unit] = []
    i, n = 0, len(lines)
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        if _FENCE.match(lines[i]):
            j = i + 1
            while j < n and not _FENCE.match(lines[j]):
                j += 1
            j = min(j, n - 1)
            units.append(Unit("code", lines[i : j + 1], first + i + 1, first + j + 1))
            i = j + 1
            continue
        j = i
        while j + 1 < n and lines[j + 1].strip() and not _FENCE.match(lines[j + 1]):
            j += 1
        block = lines[i : j + 1]
        kind = "para"
        if all(l.lstrip().startswith("|") for l in block):
            kind = "table"
        elif re.match(r"^\s*([-*+•]|\d+[.)])\s", block[0]):
            kind = "list"
        units.append(Unit(kind, block, first + i + 1, first + j + 1))
        i = j + 1
    return _glue_questions(units)


def _is_question(u: Unit) -> bool:
    head = u.lines[0].strip()
    return len(u.lines) == 1 and (bool(_QUESTION_LINE.match(head)) or (head.startswith("**") and head.rstrip("*").endswith("?")))


def _glue_questions(units: list[Unit]) -> list[Unit]:
    """A question line and the units of its answer become one 'qa' unit."""
    out: list[Unit] = []
    for u in units:
        if out and out[-1].kind == "qa" and not _is_question(u):
            q = out[-1]
            gap = [""] * max(0, u.start - q.end - 1)
            out[-1] = Unit("qa", q.lines + gap + u.lines, q.start, u.end)
        elif _is_question(u):
            out.append(Unit("qa", list(u.lines), u.start, u.end))
        else:
            out.append(u)
    return out


# --------------------------------------------------------------------------- entry point


def parse_guide(text: str, rel: str) -> GuideStructure:
    """Title, sections (with path, top-level index and line numbers) and units of one guide."""
    lines = text.split("\n")
    blocks = _markdown_blocks(text)
    fmt = "markdown" if any(b.kind == "heading" for b in blocks) else "plaintext"
    if fmt == "markdown":
        title_head, heads = _markdown_headings(blocks)

        def units(lo: int, hi: int) -> list[Unit]:
            return _markdown_units(blocks, lines, lo, hi)   # heading blocks (the title too) are not units
    else:
        title_head, heads = _plaintext_headings(lines)
        if title_head is not None:
            lines = list(lines)
            lines[title_head.line] = ""      # the title is metadata, not body text

        def units(lo: int, hi: int) -> list[Unit]:
            return _plaintext_units(lines[lo:hi], lo)
    title = title_head.title if title_head else title_from_filename(rel)

    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    top = 0
    bounds = [h.line for h in heads] + [len(lines)]
    # Text before the first heading.
    pre = units(0, bounds[0])
    if pre:
        sections.append(Section([], 0, 1, pre))
    for k, h in enumerate(heads):
        while stack and stack[-1][0] >= h.level:
            stack.pop()
        stack.append((h.level, h.title))
        if h.level == 1:
            top += 1
        sec = Section([t for _, t in stack], top, h.line + 1, units(h.body, bounds[k + 1]))
        if h.title.lower() in _TOC_TITLES:
            continue   # a table of contents repeats the headings: noise for retrieval
        sections.append(sec)
    return GuideStructure(title=title, sections=sections, format=fmt)


@dataclass
class ParsedGuide:
    """One guide cleaned and parsed once, for everything ingest builds from it (chunks, the practice bank)."""
    rel: str
    text: str                 # the cleaned text; its lines are the file's lines
    structure: GuideStructure


def parse_guides(guides) -> list[ParsedGuide]:
    """``guides``: ``ingest.reader.RawGuide`` objects (their raw text is repaired by ``ingest.clean``)."""
    from .clean import clean_text

    out = []
    for g in guides:
        text = clean_text(g.text)[0]
        out.append(ParsedGuide(g.rel, text, parse_guide(text, g.rel)))
    return out
