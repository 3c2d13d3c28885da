"""Recover a guide's structure: its title, its sections, and the units inside each section.

Markdown guides use their headings. Plain-text guides (a copied web page) have none, so
the titles a reader sees are recovered instead: numbered section titles ("5. Retrieval-
Augmented Generation (RAG)") that continue the numbering, and short title lines standing
alone between blank lines with body text after them.

A *unit* is the smallest piece the chunker keeps whole when it fits: a paragraph, a list,
a table, a fenced code block, or a question together with its answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
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


def clean_title(raw: str) -> str:
    """Heading text without markdown emphasis, links or a trailing colon."""
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    t = t.replace("**", "").replace("__", "").replace("`", "")
    return t.strip().rstrip(":").strip()


def title_from_filename(rel: str) -> str:
    words = re.split(r"[-_\s]+", PurePosixPath(rel).stem)
    return " ".join(w.upper() if w.lower() in _ACRONYMS else w.capitalize() for w in words if w)


def _is_markdown(lines: list[str]) -> bool:
    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and _HEADING.match(line):
            return True
    return False


# --------------------------------------------------------------------------- headings


@dataclass
class _Heading:
    line: int      # 0-based
    level: int     # 1 = top-level section, 2 = subsection, ... (already normalised)
    title: str


def _markdown_headings(lines: list[str]) -> tuple[_Heading | None, list[_Heading]]:
    raw: list[tuple[int, int, str]] = []
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else _HEADING.match(line)
        if m:
            raw.append((i, len(m.group(1)), clean_title(m.group(2))))
    title = None
    h1 = [h for h in raw if h[1] == 1]
    if len(h1) == 1 and raw and raw[0][1] == 1:
        title = _Heading(raw[0][0], 0, raw[0][2])
        raw = raw[1:]
    if not raw:
        return title, []
    # Top level: the shallowest level used by a heading other than the title.
    top = min(level for _, level, _ in raw)
    return title, [_Heading(i, level - top + 1, t) for i, level, t in raw]


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


def _split_units(lines: list[str], first: int) -> list[Unit]:
    """Split a section body (lines[0] is source line first+1) into units."""
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
    fmt = "markdown" if _is_markdown(lines) else "plaintext"
    title_head, heads = (_markdown_headings if fmt == "markdown" else _plaintext_headings)(lines)
    if title_head is not None:
        lines = list(lines)
        lines[title_head.line] = ""      # the title is metadata, not body text
    title = title_head.title if title_head else title_from_filename(rel)

    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    top = 0
    bounds = [h.line for h in heads] + [len(lines)]
    # Text before the first heading.
    pre = _split_units(lines[: bounds[0]], 0)
    if pre:
        sections.append(Section([], 0, 1, pre))
    for k, h in enumerate(heads):
        while stack and stack[-1][0] >= h.level:
            stack.pop()
        stack.append((h.level, h.title))
        if h.level == 1:
            top += 1
        body = lines[h.line + 1 : bounds[k + 1]]
        sec = Section([t for _, t in stack], top, h.line + 1, _split_units(body, h.line + 1))
        if h.title.lower() in _TOC_TITLES:
            continue   # a table of contents repeats the headings: noise for retrieval
        sections.append(sec)
    return GuideStructure(title=title, sections=sections, format=fmt)
