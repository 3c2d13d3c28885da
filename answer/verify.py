"""Check one answer sentence against one passage: find the span that supports it, compare what they state.

A sentence is *verified* by a passage only when one contiguous span of the passage holds its
content words in the same order and close together (a longest-common-subsequence alignment
inside a window a few times the sentence's length), and every key term the sentence states is
the one that span states:

- numbers with their units, compared as whole tokens ("8" is not "8x7B"; "12.9 billion" is "12.9B");
- names: model names, data types and methods, i.e. words with inner capitals or digits or in
  capitals (NF4, INT4, FUDGE, LoRA, GPT-4);
- one side of a pair of opposites (hard/soft, encoder-only/decoder-only, higher/lower, ...).

When the sentence states a term the span does not, and the span states another term of the same
kind, the sentence is *contradicted* and the reason names what the passage says ("the passage says
NF4"). When it states a term the span lacks with no alternative there, it is *unverified* with the
missing term named. A match in the passage's heading alone never verifies. Sentences with fewer
than three content words are *too short to check*: a separate state, not a failure.

Example::

    a = align("Mixtral activates 8 parameters per token.", "46.7B total but only activates 12.9B per token")
    a.status, a.reasons        # ('contradicted', ['the passage says 12.9B, not 8'])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from core.text import LIST_ITEM, NOT_NAMES, STOPWORDS, content_stems, content_tokens, normalise, sentence_spans

# Statuses, strongest first.
VERIFIED, UNVERIFIED, CONTRADICTED, TOO_SHORT = "verified", "unverified", "contradicted", "too_short"
STATUSES = (VERIFIED, UNVERIFIED, CONTRADICTED, TOO_SHORT)

MIN_CONTENT_WORDS = 3          # fewer: too short to check
SUPPORT_THRESHOLD = 0.6      # share of a sentence's content words one span must hold (GUIDES_CITATION_THRESHOLD)
WINDOW_FACTOR = 2.5            # the aligned span may hold at most this many content words per sentence word
WINDOW_SLACK = 6

# Pairs of opposites: a sentence that says one where the span says the other is contradicted.
OPPOSITES = [
    ("hard", "soft"), ("encoder-only", "decoder-only"), ("encoder", "decoder"), ("higher", "lower"),
    ("increase", "decrease"), ("increases", "decreases"), ("more", "fewer"), ("faster", "slower"),
    ("larger", "smaller"), ("before", "after"), ("supervised", "unsupervised"), ("online", "offline"),
    ("dense", "sparse"), ("absolute", "relative"), ("static", "dynamic"), ("explicit", "implicit"),
    ("bidirectional", "unidirectional"), ("bidirectional", "causal"), ("linear", "quadratic"),
    ("pre-training", "fine-tuning"), ("left", "right"), ("input", "output"), ("training", "inference"),
    ("lossless", "lossy"), ("deterministic", "stochastic"), ("parallel", "sequential"),
    ("compute-bound", "memory-bound"), ("feature", "batch"), ("early", "late"), ("longer", "shorter"),
    ("first", "last"), ("row", "column"), ("unidirectional", "bidirectional"),
]
_OPPOSITE_OF: dict[str, set[str]] = {}
for _a, _b in OPPOSITES:
    _OPPOSITE_OF.setdefault(_a, set()).add(_b)
    _OPPOSITE_OF.setdefault(_b, set()).add(_a)

_UNITS = {
    "billion": "b", "bn": "b", "b": "b", "million": "m", "m": "m", "thousand": "k", "k": "k", "trillion": "t",
    "t": "t", "%": "%", "percent": "%", "x": "x", "×": "x", "gb": "gb", "mb": "mb", "tb": "tb", "kb": "kb",
    "bit": "bit", "bits": "bit", "ms": "ms", "s": "s",
}
# A number and what belongs to it: "12.9B", "12.9 billion", "8x7B", "87.5%", "4-bit", "1,000", "FP16".
_NUM = re.compile(
    r"(?<![\w.])(?:[A-Za-z]+[-]?)?\d+(?:[.,]\d+)*(?:[A-Za-z]+\d*)*(?:\s?(?:%|×|percent\b|billion\b|million\b|"
    r"thousand\b|trillion\b|bn\b|-?bits?\b|[kKmMbBtT]\b|GB\b|MB\b|TB\b|KB\b|x\b))?(?![\w])"
)
# Names: inner capitals or letters+digits or all capitals (2+ letters): NF4, INT4, FUDGE, LoRA, GPT-4, RoPE.
# Names an answer may state without its passage: plain English (core.text.NOT_NAMES), and the field's own
# "AI" and "ML" (a question's "AI safety" still names AI for the refusal gate).
_NOT_NAMES = NOT_NAMES | {"ok", "ai", "ml"}
_NAME = re.compile(r"(?<![\w-])(?:[A-Za-z]*[a-z][A-Z][A-Za-z0-9-]*|[A-Z][A-Z0-9]+(?:-[A-Za-z0-9]+)*|[A-Za-z]+-?\d[\w-]*)(?![\w])")


@lru_cache(maxsize=4096)
def number_key(token: str) -> str:
    """'12.9 billion' -> '12.9b', '4-bit' -> '4bit', '1,000' -> '1000', '87.5 %' -> '87.5%', 'FP16' -> 'fp16'."""
    t = normalise(token).casefold().replace("×", "x")
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)     # '10,000x' -> '10000x' (a unit may follow)
    m = re.match(r"^(.*?\d)\s?-?\s?([a-z%]+)$", t)
    if m and m.group(2) in _UNITS and not re.search(r"[a-z]", m.group(1)):
        return m.group(1) + _UNITS[m.group(2)]
    return t.replace("-", "")


def numbers(text: str) -> dict[str, str]:
    """The numbers a text states, key -> as written ('12.9b' -> '12.9B')."""
    out: dict[str, str] = {}
    for m in _NUM.finditer(normalise(text)):
        tok = m.group(0).strip()
        out.setdefault(number_key(tok), tok)
    return out


def _unit(key: str) -> str:
    """'12.9b' -> 'b', '87.5%' -> '%', '4bit' -> 'bit', 'fp16' -> 'fp', '8' -> ''."""
    m = re.fullmatch(r"([a-z]*)[\d.]+(?:x\d+)?([a-z%]*)", key)
    return (m.group(1) + "|" + m.group(2)) if m else key


def names(text: str) -> dict[str, str]:
    """Names a text states (NF4, FUDGE, LoRA, GPT-4), key -> as written; numbers are left to ``numbers``."""
    out: dict[str, str] = {}
    for m in _NAME.finditer(normalise(text)):
        tok = m.group(0).strip("-")
        key = tok.casefold().replace("-", "")
        if key in _NOT_NAMES or len(key) < 2 or key.isdigit():
            continue
        out.setdefault(key, tok)
    return out


_PROPER = re.compile(r"(?<![.!?:]\s)(?<!^)(?<![\w-])([A-Z][a-z]{2,})(?![\w-])")


def proper_nouns(text: str) -> dict[str, str]:
    """Capitalised words inside a sentence (Canberra, Mixtral): names, but ones a passage may state anywhere."""
    t = normalise(text).strip()
    return {m.group(1).casefold(): m.group(1) for m in _PROPER.finditer(t)
            if m.group(1).casefold() not in STOPWORDS}


def opposites(text: str) -> set[str]:
    """The words of ``OPPOSITES`` a text uses (hyphenated pairs matched as written)."""
    t = " " + re.sub(r"[^a-z0-9-]+", " ", normalise(text).casefold()) + " "
    return {w for w in _OPPOSITE_OF if f" {w} " in t}


def _lcs(a: list[str], b: list[str]) -> tuple[int, list[int]]:
    """Length of the longest common subsequence of a and b, and the positions in b it uses."""
    n, m = len(a), len(b)
    dp = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        ai, row, nxt = a[i], dp[i], dp[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = nxt[j + 1] + 1 if ai == b[j] else max(nxt[j], row[j + 1])
    used, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            used.append(j)
            i, j = i + 1, j + 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return dp[0][0], used


class Swap(str):
    """A reason that says what the passage states instead: "the passage says 10,000x / 3x, not 100x". It reads as
    that sentence wherever a reason is shown, and keeps its parts for code (the practice grader) to compare::

        r = Swap.of(["10,000x", "3x"], "100x")
        r == "the passage says 10,000x / 3x, not 100x"; r.alternatives == ("10,000x", "3x"); r.said == "100x"
    """
    alternatives: tuple[str, ...]
    said: str

    @classmethod
    def of(cls, alternatives, said: str) -> "Swap":
        r = cls(f"the passage says {' / '.join(alternatives)}, not {said}")
        r.alternatives, r.said = tuple(alternatives), said
        return r


@dataclass
class Alignment:
    """How one passage supports one sentence."""
    status: str                      # verified | unverified | contradicted | too_short
    score: float                     # share of the sentence's content words found, in order, in the span
    span_start: int = 0              # the supporting sentences of the passage (character offsets)
    span_end: int = 0
    reasons: list[str] = field(default_factory=list)     # why not verified, in words
    missing: list[str] = field(default_factory=list)     # terms the sentence states that the span lacks
    conflicts: list[str] = field(default_factory=list)   # what the span states instead

    aligned: bool = False            # its words align with the span (threshold reached), whatever its terms say

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED


class PassageIndex:
    """A passage's content words, sentences and key terms, computed once and aligned against many sentences."""

    def __init__(self, text: str, header: str = ""):
        self.text = text
        self.header = header
        heads = _table_header_lines(text)      # a table's header names columns; its rows state the facts
        every = content_tokens(text)
        self.tokens = [t for t in every if not any(a <= t[1] < b for a, b in heads)]
        self.stems = [s for s, _, _ in self.tokens]
        self.stem_set = {s for s, _, _ in every}       # header cells included
        # a table row is a unit: a window that starts in one never reads the next row's cells
        self.row_end = []
        for _, a, _ in self.tokens:
            ls, le = text.rfind("\n", 0, a) + 1, text.find("\n", a)
            le = len(text) if le < 0 else le
            self.row_end.append(le if text[ls:le].lstrip().startswith("|") else None)
        self.sentences = sentence_spans(text)
        self.header_names = names(header)
        self.header_stems = set(content_stems(header))

    def _expand(self, a: int, b: int) -> tuple[int, int]:
        """Character range [a, b) grown to whole sentences/lines of the passage."""
        lo, hi = a, b
        for s, e in self.sentences:
            if e > a and s < b:
                lo, hi = min(lo, s), max(hi, e)
        return lo, hi

    def _anchor(self, stems: list[str], a: int, b: int) -> tuple[str, int]:
        """The sentence or line of span [a, b) that holds most of the sentence's words (with its table header
        row), where its numbers must be: '12 layers' must be on the BERT-Large line, not the BERT-Base one."""
        want = {x for x in stems if not any(ch.isdigit() for ch in x)}      # the figures are what is checked
        parts = [(s, e) for s, e in self.sentences if s >= a and e <= b]
        if len(parts) < 2:
            return self.text[a:b], a
        hits = [len(want & set(content_stems(self.text[s:e]))) for s, e in parts]
        top = max(hits)
        kept = [(s, e) for (s, e), h in zip(parts, hits) if h > 0.75 * top or h == top]
        return "\n".join(self.text[s:e] for s, e in kept), kept[0][0]

    def label_of(self, a: int) -> str:
        """The line that introduces the item at ``a``: the nearest line above it indented less (a list's parent,
        "- **TensorRT-LLM (NVIDIA):**"), or for an unindented line the nearest one ending with a colon."""
        line_start = self.text.rfind("\n", 0, a) + 1
        line = self.text[line_start:self.text.find("\n", a) if "\n" in self.text[a:] else len(self.text)]
        indent = len(line) - len(line.lstrip())
        for prev in reversed(self.text[:line_start].rstrip("\n").split("\n")[-8:]):
            t = prev.strip()
            if not t:
                continue
            p_indent = len(prev) - len(prev.lstrip())
            if (indent > 0 and p_indent < indent) or (indent == 0 and t.rstrip("*").endswith(":")):
                return t
        return ""

    def _compare_items(self, sentence: str, anchor: str, a: int, span: str = "") -> tuple[list[str], list[str]]:
        """Names the sentence states that its anchor lines (and their label) do not, where those lines name
        something else: "GPTQ protects salient weights" on the AWQ line. (conflicts, reasons). A sentence that
        names its anchor's item may also name the other items of ``span``: "GPTQ minimizes reconstruction error,
        while AWQ protects salient weights" across the two lines."""
        where = anchor + "\n" + self.label_of(a)
        here = {**names(where), **proper_nouns(where)}
        s_names = names(sentence)
        if span and any(k in names(anchor) for k in s_names):
            crossed = _crossed_items(sentence, s_names, span)
            if crossed:
                return crossed
            where += "\n" + span
        others = [v for k, v in names(where).items() if k not in s_names and k not in self.header_names
                  and k not in numbers(where)]
        for k, v in s_names.items():
            if k in here or k in self.header_names or k in numbers(sentence):
                continue
            if _mentions(where, v):
                continue
            if others:
                return [others[0]], [f"the passage says this of {others[0]}, not {v}"]
        return [], []

    def table_header(self, a: int) -> list[str] | None:
        """The header cells of the markdown table whose row starts at ``a`` (None outside a table)."""
        line_start = self.text.rfind("\n", 0, a) + 1
        lines = self.text[:line_start].split("\n")[:-1]
        row = self.text[line_start:self.text.find("\n", a) if "\n" in self.text[a:] else len(self.text)]
        if not row.lstrip().startswith("|"):
            return None
        block = []
        for line in reversed(lines):
            if not line.lstrip().startswith("|"):
                break
            block.append(line)
        block.reverse()
        if len(block) >= 2 and re.fullmatch(r"[\s|:\-]+", block[1]):
            return _cells(block[0])
        return None

    def best_window(self, stems: list[str], key_stems: frozenset[str] = frozenset()) -> tuple[float, int, int]:
        """(coverage, start char, end char) of the best compact window for ``stems``.

        Coverage is the share of the sentence's content words found inside one window a few times the
        sentence's length; words in the passage's heading also count (the topic: "BERT-style" under a
        "Masked Language Modeling (MLM / BERT-style)" heading), but at least two must be in the window itself,
        so a heading alone never verifies. Words found out of order cost a little (x0.85 when fewer than half
        of them keep their order). Windows holding the sentence's names and numbers (``key_stems``) win ties.
        """
        if not stems or not self.stems:
            return 0.0, 0, 0
        uniq = list(dict.fromkeys(stems))
        want = set(uniq)
        width = int(len(uniq) * WINDOW_FACTOR) + WINDOW_SLACK
        best = (0.0, 0, 0, 0, 0.0)     # (weight, -span length, start token, end token, coverage)
        starts = [i for i, s in enumerate(self.stems) if s in want]
        for i in starts:
            stop = i + width
            if self.row_end[i] is not None:
                stop = min(stop, next((k for k in range(i, len(self.tokens)) if self.tokens[k][1] >= self.row_end[i]),
                                      len(self.tokens)))
            window = self.stems[i:stop]
            pos = [j for j, s in enumerate(window) if s in want]
            found = {window[j] for j in pos}
            if len(found) < min(2, len(uniq)):
                continue
            last = max(j for j in pos if window[j] in found)
            n_order, _ = _lcs(uniq, window[:last + 1])
            cover = (len(found) + len((want - found) & self.header_stems)) / len(uniq)
            if n_order < 0.5 * len(found):
                cover *= 0.85
            weight = cover + 0.5 * len(found & key_stems) / len(uniq)
            key = (weight, -last, i, i + last, cover)
            if key > best:
                best = key
        weight, _, ti, tj, cover = best
        if weight == 0:
            return 0.0, 0, 0
        return min(cover, 1.0), self.tokens[ti][1], self.tokens[tj][2]

    def align(self, sentence: str, *, threshold: float = SUPPORT_THRESHOLD) -> Alignment:
        stems = content_stems(sentence)
        if len(set(stems)) < MIN_CONTENT_WORDS:
            return Alignment(status=TOO_SHORT, score=0.0, reasons=["too short to check"])
        keys = frozenset(content_stems(" ".join([*numbers(sentence).values(), *names(sentence).values(),
                                                 *proper_nouns(sentence).values()])))
        score, a, b = self.best_window(stems, keys)
        if score == 0.0:
            return Alignment(status=UNVERIFIED, score=0.0, reasons=["no words of the sentence are in the passage"])
        a, b = self._expand(a, b)
        span = self.text[a:b]
        header = self.table_header(a)
        if header is not None:            # a table row also says what its header says ("75%" is a Memory Reduction)
            cover = set(content_stems(span)) | set(content_stems(" ".join(header)))
            uniq = set(stems)
            score = max(score, len(uniq & cover) / len(uniq))
        anchor, anchor_at = self._anchor(stems, a, b)
        missing, conflicts, reasons = _compare_terms(sentence, span, self.header_names, self.text + "\n" + self.header,
                                                     anchor=anchor)
        if not conflicts:                 # a name the sentence ties to what another item of the span says
            conflicts, item_reasons = self._compare_items(sentence, anchor, anchor_at, span)
            reasons += item_reasons
            missing = missing + [c for c in conflicts if c not in missing]
        if not conflicts:
            conflicts, neg_reasons = _compare_negation(sentence, span)
            reasons += neg_reasons
            missing = missing + [c for c in conflicts if c not in missing]
        if not conflicts:                 # a side the whole passage never takes, where it takes the other
            for w in sorted(opposites(sentence) - opposites(self.text)):
                alt = sorted(_OPPOSITE_OF[w] & opposites(self.text))
                if alt:
                    conflicts.append(alt[0])
                    missing.append(w)
                    reasons.append(Swap.of(alt, w))
        if header is not None:            # a table row: a term must sit in the column the sentence names
            col_conflicts, col_reasons = _compare_columns(sentence, span, header)
            if col_conflicts:
                conflicts = col_conflicts
                reasons = col_reasons + [r for r in reasons if not r.startswith("the passage says")]
                missing = missing + [c for c in col_conflicts if c not in missing]
        elif not conflicts:               # prose: a number must be about what the sentence says it is about
            conflicts, ctx_reasons = _compare_context(sentence, span)
            reasons += ctx_reasons
            missing = missing + [c for c in conflicts if c not in missing]
        if conflicts:                     # a term in the passage's slot, with another value: it aligns there
            score = min(1.0, score + len(conflicts) / max(1, len(set(stems))))
        if score < threshold:
            return Alignment(status=UNVERIFIED, score=score, span_start=a, span_end=b, missing=missing,
                             conflicts=conflicts, reasons=[f"only {score:.0%} of its words are in one place of the "
                                                           f"passage"] + reasons)
        if conflicts:
            return Alignment(status=CONTRADICTED, score=score, span_start=a, span_end=b, missing=missing,
                             conflicts=conflicts, reasons=reasons, aligned=True)
        if missing:
            return Alignment(status=UNVERIFIED, score=score, span_start=a, span_end=b, missing=missing, reasons=reasons,
                             aligned=True)
        return Alignment(status=VERIFIED, score=score, span_start=a, span_end=b, aligned=True)


_NEGATED = re.compile(r"\b(?:no|not|without|never|eliminates?|removes?|avoids?|instead of)\s+(?:a |an |the |any |separate |explicit |extra |need for |need to )?([a-z][a-z-]+(?:\s[a-z][a-z-]+)?)", re.I)
_NEGATORS = re.compile(r"\b(?:no|not|without|never|n't|eliminates?|removes?|avoids?|instead of|rather than|unlike|than)\b", re.I)


def _compare_negation(sentence: str, span: str) -> tuple[list[str], list[str]]:
    """A thing the span says is absent ("no reward model") that the sentence states as present, with no
    negation of its own: contradicted. (conflicts, reasons)."""
    if _NEGATORS.search(sentence):
        return [], []
    s_stems = set(content_stems(sentence))
    for m in _NEGATED.finditer(normalise(span)):
        thing = content_stems(m.group(1))
        if thing and set(thing) <= s_stems and len(thing) >= (2 if len(thing) > 1 else 1) and len(thing[0]) > 3:
            phrase = m.group(0).strip()
            return [phrase], [f"the passage says {phrase}"]
    return [], []


def _compare_terms(sentence: str, span: str, header_names: dict[str, str],
                   passage_text: str = "", anchor: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """(missing terms, the span's alternatives, reasons) for the key terms of ``sentence`` against ``span``;
    numbers against ``anchor`` (the lines of the span the sentence is about) when given."""
    missing, conflicts, reasons = [], [], []
    s_num, p_num = numbers(sentence), numbers(anchor if anchor is not None else span)
    span_num = numbers(span)
    s_names, p_names = names(sentence), names(span)
    # Numbers: whole tokens with units. A name that is also a number token (FP16, 8x7B) is compared once, here.
    extra_nums = [v for k, v in p_num.items() if k not in s_num]
    for k, v in s_num.items():
        if k in p_num:
            continue
        same_unit = [x for x in extra_nums if _unit(number_key(x)) == _unit(k)]
        if k in span_num and not same_unit:
            continue                      # on another line of the span, and the anchor states no rival figure
        missing.append(v)
        alts = (same_unit or extra_nums)[:2]
        if alts:
            conflicts.extend(x for x in alts if x not in conflicts)
            reasons.append(Swap.of(alts, v))
        else:
            reasons.append(f"{v} is not in the passage")
    num_keys = set(s_num) | set(p_num)
    extra_names = [v for k, v in p_names.items() if k not in s_names and k not in num_keys]
    for k, v in s_names.items():
        if k in num_keys or k in p_names or k in header_names:
            continue
        # A name may be spelled as plain words in the span ("LoRA" vs "lora"): accept a case-insensitive hit.
        if _mentions(span, v):
            continue
        missing.append(v)
        if extra_names:
            conflicts.extend(x for x in extra_names[:2] if x not in conflicts)
            reasons.append(Swap.of(extra_names[:2], v))
        else:
            reasons.append(f"{v} is not in the passage")
    for k, v in proper_nouns(sentence).items():
        if k in s_names or k in num_keys or k in header_names:
            continue
        if not _mentions(passage_text, k):
            missing.append(v)
            reasons.append(f"{v} is not in the passage")
    s_opp, p_opp = opposites(sentence), opposites(span)
    for w in sorted(s_opp - p_opp):
        alt = sorted(_OPPOSITE_OF[w] & p_opp)
        if alt:
            missing.append(w)
            conflicts.extend(x for x in alt if x not in conflicts)
            reasons.append(Swap.of(alt, w))
    return missing, conflicts, reasons


def _table_header_lines(text: str) -> list[tuple[int, int]]:
    """Character ranges of markdown table header rows and their separator rows."""
    lines, pos = [], 0
    for line in text.split("\n"):
        lines.append((pos, pos + len(line), line))
        pos += len(line) + 1
    out = []
    for (a, b, line), (c, d, nxt) in zip(lines, lines[1:]):
        if line.lstrip().startswith("|") and nxt.strip() and re.fullmatch(r"[\s|:\-]+", nxt):
            out += [(a, b), (c, d)]
    return out


def _cells(row: str) -> list[str]:
    return [c.strip().strip("*").strip() for c in row.strip().strip("|").split("|")]


def _context(text: str, start: int, end: int, width: int = 3) -> set[str]:
    """Content stems within ``width`` words either side of text[start:end] and inside its clause, numbers excluded."""
    lo = max((m.end() for m in re.finditer(r"[.!?;(\n](?:\s|$)|[(\n|]", text[:start])), default=0)
    m = re.search(r"[.!?;)](?:\s|$)|[)\n|]", text[end:])
    hi = end + m.start() if m else len(text)
    before = [s for s in content_stems(text[lo:start]) if not any(ch.isdigit() for ch in s)][-width:]
    after = [s for s in content_stems(text[end:hi]) if not any(ch.isdigit() for ch in s)][:width]
    return set(before) | set(after)


def _term_positions(text: str) -> list[tuple[str, str, int, int]]:
    """(key, as written, start, end) of every number and name in ``text``."""
    t = normalise(text)
    out = [(number_key(m.group(0).strip()), m.group(0).strip(), m.start(), m.end()) for m in _NUM.finditer(t)]
    out += [(m.group(0).strip("-").casefold().replace("-", ""), m.group(0).strip("-"), m.start(), m.end())
            for m in _NAME.finditer(t)]
    return out


def _compare_context(sentence: str, span: str) -> tuple[list[str], list[str]]:
    """Numbers the span states but about something else: "8 active" where the span's "8" counts experts and
    "12.9B" is what is active. (conflicts, reasons)."""
    conflicts, reasons = [], []
    sentence, span = normalise(sentence), normalise(span)        # term offsets are offsets in the normalised text
    s_terms = [t for t in _term_positions(sentence) if t[0] in numbers(sentence)]
    p_terms = [t for t in _term_positions(span) if t[0] in numbers(span)]
    s_keys = {t[0] for t in s_terms}
    for key, shown, a, b in s_terms:
        ctx = _context(sentence, a, b)
        here = [(pa, pb) for k, _, pa, pb in p_terms if k == key]
        if not ctx or not here or any(ctx & _context(span, pa, pb) for pa, pb in here):
            continue
        alts = [w for k, w, pa, pb in p_terms if k not in s_keys and ctx & _context(span, pa, pb)]
        if alts:
            conflicts.append(alts[0])
            reasons.append(Swap.of(alts[:1], shown))
    return conflicts, reasons


def _compare_columns(sentence: str, row: str, header: list[str]) -> tuple[list[str], list[str]]:
    """In a table row, a term the sentence ties to a column ("the technique is INT4") must be that column's
    value: INT4 sits under Method while Techniques says NF4. (conflicts, reasons)."""
    sentence, row = normalise(sentence), normalise(row)          # term offsets are offsets in the normalised text
    rows = [_cells(r) for r in row.split("\n") if r.lstrip().startswith("|")]
    rows = [r for r in rows if len(r) == len(header)]
    if not rows:
        return [], []
    head_stems = [set(content_stems(h)) for h in header]
    s_nums, s_names = numbers(sentence), names(sentence)
    s_keys = set(s_nums) | set(s_names)
    conflicts, reasons = [], []
    best = None                                        # (distance, column, value, cell)
    for key, shown, a, b in _term_positions(sentence):
        cells = next((r for r in rows if any(key in set(numbers(c)) | set(names(c)) for c in r)), None)
        if cells is None:
            continue
        col = next(j for j, c in enumerate(cells) if key in set(numbers(c)) | set(names(c)))
        ctx = _context(sentence, a, b, width=4)
        if ctx & head_stems[col]:
            continue                                    # "4-bit precision": the column the sentence names
        for j, h in enumerate(head_stems):
            if j == col or not (ctx & h):
                continue
            other = [v for k, v in {**numbers(cells[j]), **names(cells[j])}.items() if k not in s_keys]
            if not other:
                continue
            words = [m for m in re.finditer(r"[A-Za-z]+", sentence) if set(content_stems(m.group(0))) & h]
            dist = min(min(abs(m.start() - b), abs(a - m.end())) for m in words) if words else 99
            if best is None or dist < best[0]:
                best = (dist, j, other[0], cells[j])
    if best is not None:
        _, j, value, cell = best
        conflicts.append(value)
        reasons.append(f"the passage's {header[j]} column says {cell}")
    return conflicts, reasons


def _mentions(text: str, name: str) -> bool:
    """Whether ``text`` holds ``name`` as a whole token, case-folded ("AWQ" in "• AWQ (Activation-aware)")."""
    return re.search(rf"(?<![\w]){re.escape(name.casefold())}(?![\w])", text.casefold()) is not None


def align(sentence: str, passage: str, header: str = "") -> Alignment:
    """Align one sentence with one passage (see the module docstring)."""
    return PassageIndex(passage, header).align(sentence)


_CLAUSE_BREAK = re.compile(r"[,;]|\b(?:while|whereas|but|and)\b", re.I)


def _item_head(line: str) -> str:
    """The part of a list item that names it: its label before a colon, else its first three words."""
    body = LIST_ITEM.sub("", line, count=1)
    label, colon, _ = body.partition(":")
    if colon and len(label.split()) <= 6:
        return label
    return " ".join(body.split()[:3])


def _crossed_items(sentence: str, s_names: dict[str, str], span: str) -> tuple[list[str], list[str]]:
    """For a sentence naming several list items of ``span`` (one line each), the first name whose clause says what
    another named item's line says: "AWQ minimizes reconstruction error, while GPTQ protects salient weights"
    across the GPTQ and AWQ lines. (conflicts, reasons); empty when each clause fits its own item's line."""
    lines = [ln for ln in span.split("\n") if LIST_ITEM.match(ln)]        # items only: prose names many things
    own = {}
    for k, v in s_names.items():
        # an item's own name leads it ("- **AWQ**: ...", "- GPTQ protects ..."); a name further in (the "GPU" of
        # "- Benefit: ... GPU memory") is something the item mentions, not the item
        at = [ln for ln in lines if _mentions(_item_head(ln), v)]
        if len(at) == 1:
            own[k] = at[0]
    if len(set(own.values())) < 2:
        return [], []
    name_stems = set(content_stems(" ".join(s_names.values())))
    said = {k: set(content_stems(ln)) - name_stems for k, ln in own.items()}      # what each item's line says
    for k in own:
        v = s_names[k]
        clause = next((c for c in _CLAUSE_BREAK.split(sentence) if _mentions(c, v)), "")
        words = set(content_stems(clause)) - name_stems
        fit = {kk: len(words & line_words) for kk, line_words in said.items()}
        best = max(fit, key=fit.get)
        if fit[best] > fit[k]:
            return [s_names[best]], [f"the passage says this of {s_names[best]}, not {v}"]
    return [], []
