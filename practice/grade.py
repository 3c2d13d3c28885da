"""Grade a person's answer against a bank question's key points: covered, contradicted or missed.

No LLM: each key point (``ingest.bank.Point``) is compared with the answer's sentences.

- **Covered**: some window of the answer (a sentence or a bullet, with its neighbour) states at least
  ``COVER_SHARE`` (``COVER_SHARE_EMBED`` with an embedder) of the point's content words (stemmed; the
  question's own words do not count, since repeating the question shows nothing). With an embedder, a
  window whose cosine similarity to the point reaches ``COVER_COSINE`` and that shares at least
  ``COVER_MIN_SHARE`` of its words also covers it, so the same idea in other words counts.
- **Misattributed**: a clause that names one labelled point ("DPO ...") but says what another labelled point
  says ("... trains a reward model and uses PPO", the guide's RLHF point) contradicts the named point and does
  not cover the other.
- **Contradicted**: an answer sentence that aligns with the point but states another number, name or side of a
  pair than the point does (the verifier's own checks, ``answer.verify.align``); the reason says what the guide
  says. A contradicted point is not covered.
- **Missed**: neither.

The score is (covered − contradicted) / points, at least 0. An empty answer, or one that says "I don't know",
scores 0 with every point missed.

Example::

    g = grade(entry, "LoRA freezes the weights and trains two low-rank matrices.")
    print(g.score, [p.text for p in g.missed])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from answer.verify import CONTRADICTED, Swap, _unit, align, numbers
from core.text import content_stems, sentence_spans
from ingest.bank import Entry, Point, plain

# Chosen on the tune part of tests/practice/fixtures/grades.jsonl (python -m practice.measure):
COVER_SHARE = 0.35        # of a point's content words, in one window of the answer (lexical grader)
COVER_SHARE_EMBED = 0.35  # the same, when an embedder also judges
COVER_COSINE = 0.65       # embedder similarity that covers a point in other words ...
COVER_MIN_SHARE = 0.2     # ... when the window also shares this much of its words
MAX_ANSWER_CHARS = 20_000

_DONT_KNOW = re.compile(r"^\W*(i\s+(do\s*n[o']?t|dont)\s+know|no\s+idea|not\s+sure|idk|pass|skip)\W*$", re.I)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+")


@dataclass
class PointGrade:
    point: Point
    state: str                        # covered | contradicted | missed
    share: float                      # best share of its words in one window of the answer
    reason: str | None = None         # contradicted: what the guide says instead
    cosine: float | None = None

    def to_json(self) -> dict:
        d = {"text": self.point.text, "lines": list(self.point.lines)}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass
class Grade:
    entry: Entry
    answer: str
    points: list[PointGrade] = field(default_factory=list)
    note: str | None = None           # "empty answer", "I don't know", "answer cut to 20,000 characters"

    def _of(self, state: str) -> list[PointGrade]:
        return [p for p in self.points if p.state == state]

    @property
    def covered(self) -> list[PointGrade]:
        return self._of("covered")

    @property
    def missed(self) -> list[PointGrade]:
        return self._of("missed")

    @property
    def contradicted(self) -> list[PointGrade]:
        return self._of("contradicted")

    @property
    def score(self) -> float:
        if not self.points:
            return 0.0
        return max(0.0, (len(self.covered) - len(self.contradicted)) / len(self.points))

    def to_json(self) -> dict:
        e = self.entry
        return {"id": e.id, "question": e.question, "guide": e.guide, "section": e.section,
                "score": round(self.score, 3),
                "covered": [p.to_json() for p in self.covered],
                "missed": [p.to_json() for p in self.missed],
                "contradicted": [p.to_json() for p in self.contradicted],
                "reference": e.reference, "reference_lines": list(e.answer_lines), "note": self.note}


def _same_kind(reason: str) -> bool:
    """A verifier reason that is a contradiction for a grader: another name or side, or another number of the
    same unit ("10,000x, not 100x"; "7B, not 100x" compares different things and is dropped)."""
    if not isinstance(reason, Swap):
        return False
    said, alts = reason.said, reason.alternatives
    if not numbers(said):            # another name or side; not the same name written longer ("GPT-style")
        return not any(said.casefold().startswith(a.casefold()) or a.casefold().startswith(said.casefold())
                       for a in alts)
    unit = {_unit(k) for k in numbers(said)}
    return any(_unit(k) in unit for alt in alts for k in numbers(alt))


def _first_alternative(reason: str) -> str:
    """'the passage says 10,000x / 3x, not 100x' -> 'the passage says 10,000x, not 100x' (the guide's first
    figure of that kind: a reader is told one thing to remember)."""
    if not isinstance(reason, Swap):
        return reason
    said, alts = reason.said, reason.alternatives
    units = {_unit(k) for k in numbers(said)}
    same = [a for a in alts if any(_unit(k) in units for k in numbers(a))] if units else list(alts)
    return str(Swap.of([(same or alts)[0]], said))


def answer_units(answer: str) -> list[str]:
    """The answer's sentences and bullets, markdown marks dropped."""
    units: list[str] = []
    for line in answer.split("\n"):
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        text = plain(line)
        for a, b in sentence_spans(text):          # a semicolon joins two claims: each is a unit
            units.extend(part.strip() for part in text[a:b].split(";") if part.strip())
    return units


_CLAUSES = re.compile(r"(?:,\s*|;\s*|\s+)(?:while|whereas|but)\s+|;\s*|,\s+and\s+(?=[A-Z])", re.I)
CROSS_MARGIN = 0.1
CROSS_SHARE = 0.25        # of the other point's words a misattributing clause must state


def _label(text: str) -> str:
    """A key point's label ("DPO" of "DPO: directly optimize ..."), or ""."""
    head, colon, _ = text.partition(":")
    return head.strip() if colon and len(head.split()) <= 4 and not any(ch.isdigit() for ch in head) else ""


def _crossings(points, owns, sentences) -> dict[int, tuple[int, str]]:
    """Clauses that name one point's label but say what another labelled point says ("DPO trains a reward
    model" when the guide's RLHF point says it): {matched point: (named point, clause)}."""
    labels = {i: set(content_stems(_label(p.text))) for i, p in enumerate(points) if _label(p.text)}
    labels = {i: st for i, st in labels.items() if st}
    if len(labels) < 2:
        return {}
    every_label = set().union(*labels.values())
    body = [own - every_label for own in owns]
    out: dict[int, tuple[int, str]] = {}
    for sent in sentences:
        for clause in (c.strip() for c in _CLAUSES.split(sent) if c and c.strip()):
            st = set(content_stems(clause))
            named = [i for i, ls in labels.items() if ls <= st]
            named = [i for i in named if not any(labels[i] < labels[k] for k in named)]   # the most specific
            if len(named) != 1:
                continue
            k = named[0]
            fit = {j: len(b & st) / len(b) for j, b in enumerate(body) if b}
            if not fit:
                continue
            j = max(fit, key=fit.get)
            if j != k and j in labels and fit[j] >= CROSS_SHARE and fit[j] > fit.get(k, 0.0) + CROSS_MARGIN:
                out.setdefault(j, (k, clause))
    return out


def grade(entry: Entry, answer: str, *, embedder=None) -> Grade:
    """Grade ``answer`` against ``entry``'s key points (see the module docstring)."""
    g = Grade(entry, answer)
    text = answer.strip()
    if len(text) > MAX_ANSWER_CHARS:
        text, g.note = text[:MAX_ANSWER_CHARS], f"answer cut to {MAX_ANSWER_CHARS:,} characters"
    if not text or _DONT_KNOW.match(text):
        g.note = "empty answer" if not text else "the answer says it does not know"
        g.points = [PointGrade(p, "missed", 0.0) for p in entry.points]
        return g
    q_stems = set(content_stems(entry.question))
    header = f"{entry.section}\n{entry.question}"      # names the question states are the point's subject too
    singles = answer_units(text)
    windows = singles + [f"{a} {b}" for a, b in zip(singles, singles[1:])]     # a point may span two sentences
    w_stems = [set(content_stems(w)) for w in windows]
    sims = None
    if embedder is not None and windows:
        vecs = np.asarray(embedder.embed([p.text for p in entry.points] + windows))
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
        sims = vecs[:len(entry.points)] @ vecs[len(entry.points):].T
    owns = []
    for p in entry.points:
        stems = set(content_stems(p.text))
        owns.append((stems - q_stems) or stems)
    def frac(own: set[str], ws: set[str]) -> float:
        return len(own & ws) / len(own) if own else 0.0

    share = [[frac(own, ws) for ws in w_stems] for own in owns]
    # Each sentence is about the point(s) it matches best: only there can it contradict ("inference uses a
    # forward pass" is about the Inference point, not a wrong claim about Training).
    about = [{i for i in range(len(owns)) if share[i][j] > 0 and share[i][j] == max(sh[j] for sh in share)}
             for j in range(len(singles))]
    crossed = _crossings(entry.points, owns, singles)
    for j, (k, clause) in crossed.items():          # the clause's words do not cover the point it misattributes
        share[j] = [frac(owns[j], set(content_stems(w.replace(clause, " ")))) for w in windows]
    named_wrong = {k: j for j, (k, _) in crossed.items()}
    for i, p in enumerate(entry.points):
        shares = share[i]
        best = max(shares, default=0.0)
        cos = float(sims[i].max()) if sims is not None and sims.shape[1] else None
        need = COVER_SHARE if sims is None else COVER_SHARE_EMBED
        covered = best >= need or (cos is not None and cos >= COVER_COSINE and best >= COVER_MIN_SHARE)
        reason = None
        for j, w in enumerate(singles):            # a sentence that states another term for the same thing
            if i not in about[j] or (i in crossed and crossed[i][1] in w):
                continue                           # (a misattributing clause is named by its own reason)
            a = align(w, p.text, header)
            if a.status == CONTRADICTED:
                kept = [_first_alternative(r) for r in a.reasons if _same_kind(r)]
                if kept:
                    reason = "; ".join(kept).replace("the passage says", "the guide says")
                    break
        if reason is None and i in named_wrong:
            reason = (f"the guide says this of {_label(entry.points[named_wrong[i]].text)}, "
                      f"not {_label(p.text)}")
        state = "contradicted" if reason else "covered" if covered else "missed"
        g.points.append(PointGrade(p, state, round(best, 3), reason, None if cos is None else round(cos, 3)))
    return g
