"""Attribute and verify citations after generation.

Every answer sentence is checked against the passages: valid markers the model wrote are
kept, markers that point to no passage are removed, and a sentence without a marker gets the
passage that supports it best. Support comes from ``answer.verify``: the share of the sentence's
content words found in order in one compact span of the passage (optionally blended with MiniLM
cosine to the passage's best sentence), and a status: *verified* only when that span also states
every number, name and opposite-pair word the sentence states; *contradicted* when the span states
another one instead ("the passage says NF4"); *unverified*; or *too short to check*. The span is
returned to show as the evidence.

Example::

    cited = attribute("LoRA merges into the weights at inference.", prompt.passages)
    cited.text                       # 'LoRA merges into the weights at inference [2].'
    cited.citations[0].verified      # True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from answer.prompt import HEADER_STYLES, Passage, prompt_header
from answer.verify import CONTRADICTED, MIN_CONTENT_WORDS, SUPPORT_THRESHOLD, TOO_SHORT, VERIFIED, Alignment, PassageIndex
from answer.verify import numbers as _numbers
from core.text import content_stems, sentence_spans


def numbers(text: str) -> set[str]:
    """The numbers a text states, as whole tokens with their units ('12.9b', '87.5%', '8x7b', 'fp16')."""
    return set(_numbers(text))

MARKER = re.compile(r"\[\s*(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]")


# --------------------------------------------------------------------------- sentences
@dataclass
class Segment:
    """A piece of the answer: a sentence (cite-able) and the whitespace that follows it."""
    text: str
    sep: str = ""


def split_sentences(text: str) -> list[Segment]:
    """The answer cut by ``core.text.sentence_spans`` (markers after a full stop stay with their sentence), each
    sentence with the whitespace that follows it; the spaces of blank lines are dropped, their line breaks kept."""
    spans = sentence_spans(text)
    segs = [Segment("", _gap(text[:spans[0][0]] if spans else text))]        # blank lines before the first
    for i, (a, b) in enumerate(spans):
        nxt = spans[i + 1][0] if i + 1 < len(spans) else len(text)
        segs.append(Segment(text[a:b], _gap(text[b:nxt])))
    return [s for s in segs if s.text or s.sep]


def _gap(between: str) -> str:
    """What separates two sentences: the whitespace within a line, or only the line breaks across lines."""
    return "\n" * between.count("\n") if "\n" in between else between


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
    score: float               # 0..1: share of its content words found in order in one span (or blended cosine)
    status: str                # verified | unverified | contradicted | too_short (answer.verify)
    span: str                  # the passage's supporting sentence(s)
    span_start: int            # character offsets of span in the passage text
    span_end: int
    source: str                # "model" (the model wrote the marker) or "attributed"
    reasons: list[str] = field(default_factory=list)     # why not verified, in words ("the passage says NF4")
    aligned: bool = False      # its words align with one span of the passage
    about: bool = False        # most of its words are in the passage (anywhere): it is about this passage
    check: float | None = None  # the answer check's P(yes) (answer.check), when it ran

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED

    @property
    def supported(self) -> bool:
        """About the passage (most of its words are there, in any order), verified or not: the refusal rule's
        test that the answer came from the passages rather than from the model's memory."""
        return self.aligned or self.about

    def to_json(self) -> dict:
        return {"sentence": self.sentence, "score": round(self.score, 3), "status": self.status,
                "verified": self.verified, "reasons": self.reasons, "span": self.span,
                "span_start": self.span_start, "span_end": self.span_end, "source": self.source,
                "check": None if self.check is None else round(self.check, 3)}


@dataclass
class Citation:
    n: int
    chunk_id: str
    supports: list[Support] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.supports) and all(s.verified for s in self.supports)

    @property
    def status(self) -> str:
        """The weakest status of its supports: contradicted < unverified < too_short < verified."""
        order = {CONTRADICTED: 0, "unverified": 1, TOO_SHORT: 2, VERIFIED: 3}
        return min((s.status for s in self.supports), key=order.__getitem__, default="unverified")

    @property
    def sentences(self) -> list[str]:
        return [s.sentence for s in self.supports]

    def to_json(self) -> dict:
        return {"n": self.n, "chunk_id": self.chunk_id, "verified": self.verified, "status": self.status,
                "sentences": self.sentences, "supports": [s.to_json() for s in self.supports]}


@dataclass
class CitedAnswer:
    text: str                                   # answer with [n] markers
    citations: list[Citation]
    removed_markers: list[int] = field(default_factory=list)   # markers that pointed to no passage
    uncited_sentences: list[str] = field(default_factory=list)  # cite-able sentences no passage supports at all
    too_short: list[str] = field(default_factory=list)          # sentences with too few words to check

    @property
    def n_supports(self) -> int:
        return sum(len(c.supports) for c in self.citations)

    @property
    def n_verified(self) -> int:
        return sum(s.verified for c in self.citations for s in c.supports)

    @property
    def n_supported(self) -> int:
        """Supports whose words align with a passage, terms aside: the answer is about the passages."""
        return sum(s.supported for c in self.citations for s in c.supports)

    @property
    def n_checkable(self) -> int:
        """Sentences long enough to check."""
        return sum(s.status != TOO_SHORT for c in self.citations for s in c.supports) + len(self.uncited_sentences)

    @property
    def status(self) -> str:
        """The answer's trust state: verified (every sentence long enough to check is verified by one of its
        cited passages), contradicted (a sentence's passages contradict it and none verifies it), unverified,
        or too_short (nothing long enough to check)."""
        by_sentence: dict[str, list[str]] = {}
        for c in self.citations:
            for s in c.supports:
                if s.status != TOO_SHORT:
                    by_sentence.setdefault(s.sentence, []).append(s.status)
        states = [VERIFIED if VERIFIED in v else (CONTRADICTED if CONTRADICTED in v else "unverified")
                  for v in by_sentence.values()]
        if CONTRADICTED in states:
            return CONTRADICTED
        if self.uncited_sentences or "unverified" in states:
            return "unverified"
        return VERIFIED if states else TOO_SHORT


class SupportScorer:
    """Aligns sentences with passages (``answer.verify``); ``mode`` says how the support score is computed:
    "lexical" (in-order word coverage of the best span), "embed" (MiniLM cosine to the passage's best
    sentence) or "blend" (their mean). The status always comes from the alignment and its key terms.
    """

    MODES = ("lexical", "embed", "blend")

    def __init__(self, passages: Sequence[Passage], *, embedder=None, mode: str = "lexical", threshold: float = SUPPORT_THRESHOLD):
        if mode not in self.MODES:
            raise ValueError(f"Unknown support mode {mode!r}. Supported modes are: {list(self.MODES)}")
        if mode != "lexical" and embedder is None:
            raise ValueError(f"Support mode {mode!r} needs an embedder; pass embedder= or use mode='lexical'.")
        self.passages = list(passages)
        self.mode = mode
        self.threshold = threshold
        self.embedder = embedder
        self.index = [PassageIndex(p.hit.text, p.header) for p in self.passages]
        self._span_vecs = None
        if mode != "lexical":
            flat = [ix.text[a:b] for ix in self.index for a, b in ix.sentences]
            vecs = embedder.embed(flat) if flat else np.zeros((0, 1), dtype=np.float32)
            self._span_vecs, i = [], 0
            for ix in self.index:
                self._span_vecs.append(vecs[i:i + len(ix.sentences)])
                i += len(ix.sentences)

    def align_all(self, sentence: str) -> list[tuple[float, Alignment]]:
        """(support score, alignment) for every passage, in passage order."""
        aligns = [ix.align(sentence, threshold=self.threshold) for ix in self.index]
        if self.mode == "lexical":
            return [(a.score, a) for a in aligns]
        qvec = self.embedder.embed([sentence])[0]
        out = []
        for i, a in enumerate(aligns):
            cos = self._span_vecs[i] @ qvec if len(self._span_vecs[i]) else np.zeros(0)
            best_cos = max(float(cos.max()), 0.0) if len(cos) else 0.0
            out.append((best_cos if self.mode == "embed" else 0.5 * (a.score + best_cos), a))
        return out


def strip_echoed_headers(answer: str, passages: Sequence[Passage]) -> str:
    """Drop answer lines that only repeat a passage's "[n] guide › section" header (small models copy them)."""
    heads = {" ".join(prompt_header(p.hit, style).split()).casefold() for p in passages for style in HEADER_STYLES}
    kept = []
    for line in answer.split("\n"):
        bare = " ".join(MARKER.sub("", line).split()).strip(" *#:-").casefold()
        if bare and bare in heads:
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def is_citeable(sentence: str, min_content_words: int = MIN_CONTENT_WORDS) -> bool:
    """Sentences with a few content words state something checkable; 'Sure!' or 'NF4.' do not."""
    return len(set(content_stems(sentence))) >= min_content_words


def attribute(answer: str, passages: Sequence[Passage], *, threshold: float = SUPPORT_THRESHOLD, embedder=None,
              mode: str = "lexical", min_attach: float = 0.2, skip: Sequence[str] = (),
              question: str = "") -> CitedAnswer:
    """Keep valid markers, drop invalid ones, attach the best passage where needed, verify every citation.

    A sentence whose model-written markers are all unsupported also gets the best passage if that one
    is supported; one whose model-written markers do not verify it (a term differs) also gets the best
    passage that does verify it, so a right sentence cited to the wrong passage is not "contradicted".
    ``min_attach``: an unmarked sentence whose best passage scores below this gets no citation (it is listed
    in ``uncited_sentences``). A sentence too short to check keeps the markers the model wrote, with the state
    "too short to check". ``skip``: sentences never cited. ``question``: words a
    sentence repeats from it count as "about the passages" for the refusal rule (not for verification).
    """
    q_stems = set(content_stems(question))
    scorer = SupportScorer(passages, embedder=embedder, mode=mode, threshold=threshold)
    by_n = {p.n: i for i, p in enumerate(passages)}
    cites: dict[int, Citation] = {}
    removed: list[int] = []
    uncited: list[str] = []
    too_short: list[str] = []
    out_parts: list[str] = []
    for seg in split_sentences(answer):
        written = parse_markers(seg.text)
        bare = strip_markers(seg.text)
        valid = [n for n in written if n in by_n]
        removed += [n for n in written if n not in by_n]
        if not bare.strip() or any(s in bare for s in skip) or not re.search(r"\w", bare):
            out_parts.append(bare + seg.sep)
            continue
        if not is_citeable(bare):
            too_short.append(bare)
            for n in valid:
                cites.setdefault(n, Citation(n=n, chunk_id=passages[by_n[n]].chunk_id)).supports.append(
                    Support(sentence=bare, score=0.0, status=TOO_SHORT, span="", span_start=0, span_end=0,
                            source="model", reasons=["too short to check"]))
            out_parts.append(place_markers(bare, valid) + seg.sep)
            continue
        scored = scorer.align_all(bare)
        chosen: list[tuple[int, str]] = [(n, "model") for n in valid]
        best_i = max(range(len(passages)), key=lambda i: (scored[i][0], -i)) if passages else None
        model_ok = any(scored[by_n[n]][0] >= threshold for n in valid)
        if not model_ok and best_i is not None and scored[best_i][0] >= min_attach \
                and passages[best_i].n not in valid and (not valid or scored[best_i][0] >= threshold):
            chosen.append((passages[best_i].n, "attributed"))   # no marker, or the model's marker is unsupported
        elif valid and not any(scored[by_n[n]][1].status == VERIFIED for n in valid):
            stating = [i for i, (_, al) in enumerate(scored) if al.status == VERIFIED and passages[i].n not in valid]
            if stating:         # the model's passage does not state it (or names other terms), another one does
                chosen.append((passages[max(stating, key=lambda i: (scored[i][0], -i))].n, "attributed"))
        if not chosen:
            uncited.append(bare)
        for n, source in chosen:
            i = by_n[n]
            sc, al = scored[i]
            text = passages[i].hit.text
            cites.setdefault(n, Citation(n=n, chunk_id=passages[i].chunk_id)).supports.append(
                Support(sentence=bare, score=float(sc), status=al.status, span=text[al.span_start:al.span_end],
                        span_start=al.span_start, span_end=al.span_end, source=source, reasons=list(al.reasons),
                        aligned=al.aligned and sc >= threshold,
                        about=_about(bare, scorer.index[i].stem_set, q_stems, threshold)))
        out_parts.append(place_markers(bare, [n for n, _ in chosen]) + seg.sep)
    return CitedAnswer(text="".join(out_parts).strip(), citations=[cites[n] for n in sorted(cites)],
                       removed_markers=removed, uncited_sentences=uncited, too_short=too_short)


def _about(sentence: str, passage_stems: set[str], question_stems: set[str], threshold: float) -> bool:
    """Most of the sentence's words are in the passage or the question, and what it adds to the question is
    mostly in the passage: an answer restating the question ("LoRA adds no latency when serving") is about
    the passages; one that brings its own facts from elsewhere is not."""
    uniq = set(content_stems(sentence))
    if not uniq:
        return False
    if len(uniq & (passage_stems | question_stems)) / len(uniq) < threshold:
        return False
    new = uniq - question_stems
    return len(new) < 2 or len(new & passage_stems) / len(new) >= 0.5


def short_answer_grounded(sentences: Sequence[str], passages: Sequence[Passage]) -> bool:
    """A short answer ("NF4.") too short to check is still grounded when all its words are in one passage."""
    words = [set(content_stems(s)) for s in sentences]
    if not any(words):
        return False
    stems = [set(content_stems(p.hit.text + " " + p.header)) for p in passages]
    return all(not w or any(w <= ps for ps in stems) for w in words)
