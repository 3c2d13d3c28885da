"""Attribute and verify citations after generation.

Small models seldom write [n] markers, so every answer sentence is checked against the
passages: valid markers the model wrote are kept, markers that point to no passage are
removed, and a sentence without a marker gets the passage that supports it best. Support is
the share of the sentence's content words (Snowball stems) found in the passage, optionally
combined with MiniLM cosine to the passage's best sentence; a citation is *verified* when
its support reaches ``threshold`` and every number the sentence states appears in the passage.
The best passage sentence is returned as the span to
highlight.

Example::

    cited = attribute("LoRA merges into the weights at inference.", prompt.passages)
    cited.text                       # 'LoRA merges into the weights at inference [2].'
    cited.citations[0].verified      # True
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from answer.prompt import Passage
from ingest.bm25 import STOPWORDS, stemmer_for_thread

# Words that carry no topic in an answer sentence ("the model uses ..."), on top of BM25's stopwords.
_GENERIC = frozenset("""
    use used uses using also can may might must need needs make makes made like one two get gets
    well way ways often usually typically generally however therefore thus e g eg ie etc example
    examples allow allows help helps important key main based different various several many much
    way passage passages guide guides question answer answers according
""".split())
_WORD = re.compile(r"[a-z0-9]+")
MARKER = re.compile(r"\[\s*(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]")
_ABBREV = ("e.g.", "i.e.", "etc.", "vs.", "approx.", "fig.", "eq.", "cf.", "al.")


def content_stems(text: str) -> list[str]:
    """NFKC-casefolded words minus stopwords and generic words, Snowball-stemmed."""
    t = unicodedata.normalize("NFKC", text).casefold()
    words = [w for w in _WORD.findall(t) if w not in STOPWORDS and w not in _GENERIC and (len(w) > 1 or w.isdigit())]
    return stemmer_for_thread().stemWords(words)


# --------------------------------------------------------------------------- sentences
@dataclass
class Segment:
    """A piece of the answer: a sentence (cite-able) and the whitespace that follows it."""
    text: str
    sep: str = ""


def split_sentences(text: str) -> list[Segment]:
    """Split on sentence ends and line breaks; markers after a full stop stay with their sentence."""
    segs: list[Segment] = []
    for m in re.finditer(r"[^\n]+|\n+", text):
        chunk = m.group(0)
        if chunk.startswith("\n"):
            if segs:
                segs[-1].sep += chunk
            else:
                segs.append(Segment("", chunk))
            continue
        start = 0
        for b in re.finditer(r"(?<=[.!?])((?:\s*\[[\d,;\s]+\])*)(\s+)(?=[A-Z0-9\"'(*\-•])", chunk):
            end = b.end(1)
            piece = chunk[start:end]
            if _ends_with_abbrev(chunk[start:b.start()]) or _is_decimal_gap(chunk, b.start()):
                continue
            segs.append(Segment(piece, b.group(2)))
            start = b.end()
        segs.append(Segment(chunk[start:], ""))
    return [s for s in segs if s.text or s.sep]


def _ends_with_abbrev(s: str) -> bool:
    low = s.lower()
    return low.endswith(_ABBREV) or bool(re.search(r"(^|\s)[a-z]\.$", low))


def _is_decimal_gap(chunk: str, i: int) -> bool:
    return i < len(chunk) and chunk[i - 1] == "." and i >= 2 and chunk[i - 2].isdigit() and chunk[i:i + 1].isdigit()


def parse_markers(sentence: str) -> list[int]:
    out: list[int] = []
    for m in MARKER.finditer(sentence):
        for x in re.split(r"[,;]", m.group(1)):
            n = int(x)
            if n not in out:
                out.append(n)
    return out


def strip_markers(sentence: str) -> str:
    s = MARKER.sub("", sentence)
    s = re.sub(r"[ \t]+([.!?,;:])", r"\1", s)
    return re.sub(r"[ \t]{2,}", " ", s).rstrip()


def place_markers(sentence: str, ns: Sequence[int]) -> str:
    """Put ' [n][m]' before the sentence's final punctuation (or at its end)."""
    if not ns:
        return sentence
    tag = "".join(f"[{n}]" for n in ns)
    m = re.search(r"([.!?:;]+[\"')\]]*)$", sentence)
    if m and sentence[:m.start()].strip():
        return f"{sentence[:m.start()].rstrip()} {tag}{m.group(1)}"
    return f"{sentence} {tag}"


# --------------------------------------------------------------------------- support
@dataclass
class Support:
    """How passage [n] supports one answer sentence."""
    sentence: str              # the answer sentence (markers removed)
    score: float               # 0..1
    supported: bool            # the score reached the threshold: the sentence is about this passage
    span: str                  # best-supporting sentence of the passage
    span_start: int            # character offsets of span in the passage text
    span_end: int
    source: str                # "model" (the model wrote the marker) or "attributed"
    unsupported_numbers: list[str] = field(default_factory=list)   # numbers in the sentence the passage lacks

    @property
    def verified(self) -> bool:
        """Supported, and every number the sentence states is in the passage."""
        return self.supported and not self.unsupported_numbers

    def to_json(self) -> dict:
        return {"sentence": self.sentence, "score": round(self.score, 3), "verified": self.verified,
                "span": self.span, "span_start": self.span_start, "span_end": self.span_end, "source": self.source,
                "unsupported_numbers": self.unsupported_numbers}


@dataclass
class Citation:
    n: int
    chunk_id: str
    supports: list[Support] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.supports) and all(s.verified for s in self.supports)

    @property
    def sentences(self) -> list[str]:
        return [s.sentence for s in self.supports]

    def to_json(self) -> dict:
        return {"n": self.n, "chunk_id": self.chunk_id, "verified": self.verified,
                "sentences": self.sentences, "supports": [s.to_json() for s in self.supports]}


@dataclass
class CitedAnswer:
    text: str                                   # answer with [n] markers
    citations: list[Citation]
    removed_markers: list[int] = field(default_factory=list)   # markers that pointed to no passage
    uncited_sentences: list[str] = field(default_factory=list)  # cite-able sentences no passage supports at all

    @property
    def n_supports(self) -> int:
        return sum(len(c.supports) for c in self.citations)

    @property
    def n_verified(self) -> int:
        return sum(s.verified for c in self.citations for s in c.supports)

    @property
    def n_supported(self) -> int:
        """Supports whose words reach the threshold, numbers aside: the answer is about the passages."""
        return sum(s.supported for c in self.citations for s in c.supports)


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers(text: str) -> set[str]:
    """The numbers a text states ('14', '87.5', '1000' for '1,000'), digits anywhere ('FP16' gives '16')."""
    out = set()
    for m in _NUMBER.findall(text):
        m = re.sub(r"(?<=\d),(?=\d{3}\b)", "", m).rstrip(".,")
        out.add(m)
    return out


def _passage_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the passage's sentences / lines."""
    spans = []
    for m in re.finditer(r"[^\n]+", text):
        line_start = m.start()
        line = m.group(0)
        start = 0
        for b in re.finditer(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(*\-•])", line):
            if _ends_with_abbrev(line[start:b.start()]):
                continue
            spans.append((line_start + start, line_start + b.start()))
            start = b.end()
        spans.append((line_start + start, line_start + len(line)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


class SupportScorer:
    """Scores how well a passage supports a sentence: lexical coverage, optionally blended with cosine.

    ``mode``: "lexical" (share of the sentence's content stems present in the passage),
    "embed" (MiniLM cosine to the passage's best sentence) or "blend" (their mean).
    """

    MODES = ("lexical", "embed", "blend")

    def __init__(self, passages: Sequence[Passage], *, embedder=None, mode: str = "lexical"):
        if mode not in self.MODES:
            raise ValueError(f"Unknown support mode {mode!r}. Supported modes are: {list(self.MODES)}")
        if mode != "lexical" and embedder is None:
            raise ValueError(f"Support mode {mode!r} needs an embedder; pass embedder= or use mode='lexical'.")
        self.passages = list(passages)
        self.mode = mode
        self.embedder = embedder
        self._stems = [set(content_stems(p.hit.text + " " + p.header)) for p in self.passages]
        self._numbers = [numbers(p.hit.text + " " + p.header) for p in self.passages]
        self._spans = [_passage_sentences(p.hit.text) for p in self.passages]
        self._span_stems = [[set(content_stems(p.hit.text[a:b])) for a, b in spans]
                            for p, spans in zip(self.passages, self._spans)]
        self._span_vecs = None
        if mode != "lexical":
            flat = [p.hit.text[a:b] for p, spans in zip(self.passages, self._spans) for a, b in spans]
            vecs = embedder.embed(flat) if flat else np.zeros((0, 1), dtype=np.float32)
            self._span_vecs, i = [], 0
            for spans in self._spans:
                self._span_vecs.append(vecs[i:i + len(spans)])
                i += len(spans)

    def score_all(self, sentence: str) -> list[tuple[float, int]]:
        """(score, best span index) for every passage, in passage order."""
        stems = set(content_stems(sentence))
        qvec = None
        if self.mode != "lexical":
            qvec = self.embedder.embed([sentence])[0]
        out = []
        for i in range(len(self.passages)):
            lex = len(stems & self._stems[i]) / len(stems) if stems else 0.0
            span_lex = [len(stems & s) for s in self._span_stems[i]]
            best_span = int(np.argmax(span_lex)) if span_lex else -1
            if self.mode == "lexical":
                out.append((lex, best_span))
                continue
            cos = self._span_vecs[i] @ qvec if len(self._span_vecs[i]) else np.zeros(0)
            best_cos = float(cos.max()) if len(cos) else 0.0
            if len(cos):
                best_span = int(np.argmax(cos)) if self.mode == "embed" or not any(span_lex) else best_span
            score = best_cos if self.mode == "embed" else 0.5 * (lex + max(best_cos, 0.0))
            out.append((score, best_span))
        return out

    def unsupported_numbers(self, sentence: str, i: int) -> list[str]:
        """Numbers the sentence states that passage ``i`` does not contain: a small model that copies a
        passage's words but changes its figure ("24 GB" against "14 GB") scores high on word overlap, so
        word overlap alone would call it verified."""
        return sorted(numbers(sentence) - self._numbers[i])

    def span(self, i: int, j: int) -> tuple[str, int, int]:
        if j < 0 or not self._spans[i]:
            t = self.passages[i].hit.text
            return t, 0, len(t)
        a, b = self._spans[i][j]
        return self.passages[i].hit.text[a:b], a, b


def strip_echoed_headers(answer: str, passages: Sequence[Passage]) -> str:
    """Drop answer lines that only repeat a passage's "[n] guide › section" header (small models copy them)."""
    heads = {" ".join(p.header.split()).casefold() for p in passages}
    kept = []
    for line in answer.split("\n"):
        bare = " ".join(MARKER.sub("", line).split()).strip(" *#:-").casefold()
        if bare and bare in heads:
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def is_citeable(sentence: str, min_content_words: int = 3) -> bool:
    """Sentences with a few content words state something; 'Sure!' or a bare heading do not."""
    return len(content_stems(sentence)) >= min_content_words


def attribute(answer: str, passages: Sequence[Passage], *, threshold: float = 0.5, embedder=None,
              mode: str = "lexical", min_attach: float = 0.2, skip: Sequence[str] = ()) -> CitedAnswer:
    """Keep valid markers, drop invalid ones, attach the best passage where needed, verify every citation.

    A sentence whose model-written markers are all unverified also gets the best passage if that
    one verifies. ``min_attach``: an unmarked sentence whose best passage scores below this gets no
    citation (it is listed in ``uncited_sentences``). ``skip``: sentences never cited.
    """
    scorer = SupportScorer(passages, embedder=embedder, mode=mode)
    by_n = {p.n: i for i, p in enumerate(passages)}
    cites: dict[int, Citation] = {}
    removed: list[int] = []
    uncited: list[str] = []
    out_parts: list[str] = []
    for seg in split_sentences(answer):
        written = parse_markers(seg.text)
        bare = strip_markers(seg.text)
        valid = [n for n in written if n in by_n]
        removed += [n for n in written if n not in by_n]
        if not bare.strip() or not is_citeable(bare) or any(s in bare for s in skip):
            out_parts.append(bare + seg.sep)
            continue
        scores = scorer.score_all(bare)
        chosen: list[tuple[int, str]] = [(n, "model") for n in valid]
        best_i = max(range(len(passages)), key=lambda i: (scores[i][0], -i)) if passages else None
        model_ok = any(scores[by_n[n]][0] >= threshold for n in valid)
        if not model_ok and best_i is not None and scores[best_i][0] >= min_attach \
                and passages[best_i].n not in valid and (not valid or scores[best_i][0] >= threshold):
            chosen.append((passages[best_i].n, "attributed"))   # no marker, or the model's marker is unsupported
        if not chosen:
            uncited.append(bare)
        for n, source in chosen:
            i = by_n[n]
            sc, j = scores[i]
            span, a, b = scorer.span(i, j)
            cites.setdefault(n, Citation(n=n, chunk_id=passages[i].chunk_id)).supports.append(
                Support(sentence=bare, score=float(sc), supported=sc >= threshold, span=span, span_start=a,
                        span_end=b, source=source, unsupported_numbers=scorer.unsupported_numbers(bare, i)))
        out_parts.append(place_markers(bare, [n for n, _ in chosen]) + seg.sep)
    return CitedAnswer(text="".join(out_parts).strip(), citations=[cites[n] for n in sorted(cites)],
                       removed_markers=removed, uncited_sentences=uncited)
