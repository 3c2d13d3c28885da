"""The question bank: the guides' own interview questions, each with its reference answer and key points.

Three shapes of question are found in the parsed guides (``ingest.structure``):

- a heading that asks ("### Q7: What is few-shot learning?", "### What is NLP and why do we need it?"): the
  reference answer is everything under it up to the next heading of the same or a higher level (its own
  sub-headings belong to the answer);
- a question line glued to its answer ("**Q4: What is ...?**" then "**Expected Answer:**" and a list): a
  ``qa`` unit; the answer is the rest of the unit, without the "Answer:" label;
- a quick-fire line of a copied web page: ``"What is LoRA and why use it?" → LoRA adds ...``.

Key points are what a grader checks one by one: each list item (an item that only labels its sub-items,
"**Benefits:**", is prefixed to them), each table row (header cells as labels), each sentence of a paragraph,
and a fenced code block as one point. Line numbers are the guide file's own (cleaning keeps lines aligned).

An entry's id is derived from the guide and the question's words only, so it stays the same while the
question's text does not change, even when its answer is edited.

Example::

    entries = build_bank(parse_guides(raw_guides))        # ingest.reader.RawGuide objects
    print(len(entries), entries[0].question, entries[0].answer_lines, entries[0].points[0].text)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.text import normalise_for_match, sentence_spans
from .structure import ParsedGuide, Section, Unit, parse_guides

BANK_FILE = "practice.jsonl"
BANK_FORMAT = 1                # bumped when entries change shape: ingest rebuilds the bank once

_Q_LABEL = re.compile(r"^\s*(?:Q(?:uestion)?\s*\d+\s*[:.)]\s*|Question\s*[:.]\s*)", re.I)
_ANSWER_LABEL = re.compile(r"^\s*\**\s*(expected\s+answer|answer|a)\s*[:.]\s*\**\s*:?\s*$", re.I)
_ANSWER_PREFIX = re.compile(r"^\s*\**\s*(expected\s+answer|answer)\s*[:.]\s*\**\s*", re.I)
_QUICK = re.compile(r'^\s*["“](?P<q>[^"”]{8,300}\?)["”]\s*(?:→|->|—|:)\s*(?P<a>\S.*)$')
_ITEM = re.compile(r"^(?P<indent>\s*)(?:[-*+•]|\d{1,2}[.)])\s+(?P<text>.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_MD = re.compile(r"\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)|`")


def plain(text: str) -> str:
    """Inline markdown marks (bold, italics, code ticks) dropped; spaces collapsed."""
    return " ".join(_MD.sub("", text).split())


@dataclass(frozen=True)
class Point:
    text: str                      # the guide's words, markdown marks dropped
    lines: tuple[int, int]         # first and last line in the guide
    kind: str                      # item | row | sentence | code

    def to_json(self) -> dict:
        return {"text": self.text, "lines": list(self.lines), "kind": self.kind}


@dataclass
class Entry:
    id: str
    question: str
    guide: str
    section: str                   # "Guide title › Section › ..." (the question's own heading included)
    question_lines: tuple[int, int]
    answer_lines: tuple[int, int]
    reference: str                 # the answer's text as the guide writes it
    points: list[Point] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["question_lines"], d["answer_lines"] = list(self.question_lines), list(self.answer_lines)
        d["points"] = [p.to_json() for p in self.points]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Entry":
        return cls(id=d["id"], question=d["question"], guide=d["guide"], section=d["section"],
                   question_lines=tuple(d["question_lines"]), answer_lines=tuple(d["answer_lines"]),
                   reference=d["reference"],
                   points=[Point(p["text"], tuple(p["lines"]), p["kind"]) for p in d["points"]])


def entry_id(guide: str, question: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", guide.lower().rsplit(".", 1)[0]).strip("-")[:24]
    h = hashlib.sha256(f"{guide}\n{normalise_for_match(question)}".encode()).hexdigest()[:10]
    return f"{slug}-{h}"


def clean_question(line: str) -> str:
    return _Q_LABEL.sub("", plain(line)).strip()


# --------------------------------------------------------------------------- key points


def _row_cells(line: str) -> list[str]:
    return [plain(c) for c in line.strip().strip("|").split("|")]


def key_points(lines: list[str], first: int) -> list[Point]:
    """Key points of an answer's lines (``lines[0]`` is guide line ``first``)."""
    points: list[Point] = []
    i, n = 0, len(lines)
    label_at: dict[int, str] = {}          # indent -> the label an item with sub-items gives them
    header: list[str] | None = None
    para: list[tuple[int, str]] = []

    def flush_para() -> None:
        if not para:
            return
        text = " ".join(t for _, t in para)
        lo, hi = para[0][0], para[-1][0]
        for a, b in sentence_spans(text):
            s = plain(text[a:b])
            if len(s.split()) >= 3 and not s.rstrip().endswith(":"):     # "Common metrics include:" leads in
                points.append(Point(s, (first + lo, first + hi), "sentence"))
        para.clear()

    while i < n:
        line = lines[i]
        s = line.strip()
        if not s or _ANSWER_LABEL.match(s) or re.fullmatch(r"-{3,}|\*{3,}", s):
            flush_para()
            if not s:
                header = None
            i += 1
            continue
        if _FENCE.match(s):
            flush_para()
            j = i + 1
            while j < n and not _FENCE.match(lines[j]):
                j += 1
            body = "\n".join(lines[i + 1:j]).strip()
            if body:
                points.append(Point(body, (first + i, first + min(j, n - 1)), "code"))
            i = j + 1
            continue
        if s.startswith("|"):
            flush_para()
            cells = _row_cells(s)
            if all(re.fullmatch(r":?-{2,}:?", c.replace(" ", "")) for c in cells if c):
                i += 1
                continue
            if header is None and i + 1 < n and re.fullmatch(r"\|?[\s:|-]+\|?", lines[i + 1].strip() or "x"):
                header = cells
                i += 1
                continue
            if header and len(header) == len(cells):
                text = "; ".join(f"{h}: {c}" if h else c for h, c in zip(header, cells) if c)
            else:
                text = "; ".join(c for c in cells if c)
            points.append(Point(text, (first + i, first + i), "row"))
            i += 1
            continue
        m = _ITEM.match(line)
        if m:
            flush_para()
            indent = len(m.group("indent").expandtabs(4))
            text = plain(_ANSWER_PREFIX.sub("", m.group("text")))
            j = i + 1                      # continuation lines of the item (indented, not an item themselves)
            while j < n and lines[j].strip() and not _ITEM.match(lines[j]) and lines[j].startswith(" "):
                text += " " + plain(lines[j])
                j += 1
            for k in [k for k in label_at if k >= indent]:
                del label_at[k]
            nxt = _ITEM.match(lines[j]) if j < n else None
            has_children = nxt is not None and len(nxt.group("indent").expandtabs(4)) > indent
            label = next((label_at[k] for k in sorted(label_at, reverse=True) if k < indent), "")
            if has_children and (text.endswith(":") or len(text.split()) <= 4):
                label_at[indent] = text.rstrip(":").strip()
            elif text:
                full = f"{label}: {text}" if label and not text.lower().startswith(label.lower()) else text
                points.append(Point(full, (first + i, first + j - 1), "item"))
            i = j
            continue
        para.append((i, _ANSWER_PREFIX.sub("", s) if not para else s))
        i += 1
    flush_para()
    return points


# --------------------------------------------------------------------------- extraction


def _asks(title: str) -> bool:
    return plain(title).rstrip().endswith("?")


def _section_label(title: str, path: list[str]) -> str:
    return " › ".join([title, *[plain(p) for p in path]])


def guide_entries(guide: ParsedGuide) -> list[Entry]:
    """The bank entries of one cleaned, parsed guide."""
    rel, lines, struct = guide.rel, guide.text.split("\n"), guide.structure
    out: list[Entry] = []
    secs: list[Section] = struct.sections
    for k, sec in enumerate(secs):
        if not sec.path or not _asks(sec.path[-1]):
            continue
        depth = len(sec.path)
        units: list[Unit] = list(sec.units)
        for later in secs[k + 1:]:                     # sub-sections belong to the answer
            if len(later.path) <= depth or later.path[:depth] != sec.path:
                break
            units.extend(later.units)
        if not units:
            continue
        lo, hi = units[0].start, max(u.end for u in units)
        answer = lines[lo - 1:hi]
        q = clean_question(sec.path[-1])
        out.append(_entry(rel, q, _section_label(struct.title, sec.path[:-1]), (sec.start, sec.start), (lo, hi),
                          answer))
    for k, sec in enumerate(secs):
        for u in sec.units:
            if u.kind == "qa":
                q = clean_question(u.lines[0])
                rest = u.lines[1:]
                if not rest or not q.endswith("?") and not _Q_LABEL.match(plain(u.lines[0])):
                    continue
                off = next((j for j, l in enumerate(rest) if l.strip() and not _ANSWER_LABEL.match(l.strip())), None)
                if off is None:
                    continue
                lo = u.start + 1 + off
                out.append(_entry(rel, q, _section_label(struct.title, sec.path), (u.start, u.start), (lo, u.end),
                                  lines[lo - 1:u.end]))
            else:
                for j, line in enumerate(u.lines):
                    m = _QUICK.match(line)
                    if m:
                        ln = u.start + j
                        out.append(_entry(rel, plain(m.group("q")), _section_label(struct.title, sec.path),
                                          (ln, ln), (ln, ln), [m.group("a")]))
    seen: set[str] = set()
    uniq = []
    for e in sorted(out, key=lambda e: e.question_lines):
        if e.id not in seen and e.points:
            seen.add(e.id)
            uniq.append(e)
    return uniq


def _entry(rel, question, section, qlines, alines, answer_lines: list[str]) -> Entry:
    return Entry(id=entry_id(rel, question), question=question, guide=rel, section=section,
                 question_lines=qlines, answer_lines=alines, reference="\n".join(answer_lines).strip(),
                 points=key_points(answer_lines, alines[0]))


def build_bank(guides: list[ParsedGuide]) -> list[Entry]:
    """Every guide's entries, guide by guide."""
    return [e for g in guides for e in guide_entries(g)]


def bank_from_folder(folder: Path) -> list[Entry]:
    """The bank of a guides folder, read and cleaned as ingest does (for tools and tests; the app reads the
    bank ingest published with the index)."""
    from .reader import RawGuide, find_guides, read_guide

    guides = [g for g in (read_guide(p, folder) for p in find_guides(folder)) if isinstance(g, RawGuide)]
    return build_bank(parse_guides(guides))


def write_bank(path: Path, entries: list[Entry]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e.to_json(), ensure_ascii=False) + "\n")


class BankError(RuntimeError):
    """The bank is missing or unreadable; the message says how to fix it."""


def read_bank(path: Path) -> list[Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BankError(f"No practice bank at {path}: run `guides ingest` to build it with the index.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BankError(f"Cannot read the practice bank {path} ({e}): run `guides ingest --rebuild`.") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(Entry.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise BankError(f"{path}, line {n}: not a practice entry ({e}); run `guides ingest --rebuild`.") from None
    return out
