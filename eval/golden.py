"""Load and validate a golden set (JSONL); judge passage relevance and answer facts; split tune/test.

Line format (one JSON object per line, validated by :class:`GoldenLine`)::

    {"id": "f02", "kind": "answerable" | "unanswerable" | "followup",
     "turns": ["question", ...],                 # a followup has two or more; the last one is asked
     "evidence": ["exact phrase from the guides", ...],   # marks the relevant passages
     "answer_keywords": ["...", ...],            # soft keyword recall (substring, case-folded)
     "answer_facts": [["12.9B", "12.9 billion"], ["46.7B", "46.7 billion"]]}

``answer_facts`` (answerable and followup only, required there): the facts a correct answer must
state, every one of them; each fact is a list of acceptable variants. A variant matches an answer
when, after both are normalised (NFKC, case-folded, every run of non-alphanumerics to one space,
see ``ingest.clean.normalise_for_match``), it occurs there as whole words: "8" does not match inside
"128" or "8x7b". A variant ending in ``*`` matches any word that starts with it ("rotat*" matches
"rotate" and "rotation", not "rotary"); one ending in a letter also matches its plural in -s or -es
("metric" matches "metrics").

Tune/test split (issue 12: choose on data that did not choose): a question's part is fixed by
``sha256(SPLIT_SEED + ":" + id)`` alone, read as a number in [0, 1): below ``TEST_SHARE`` it is in
``test``, otherwise in ``tune``. Adding, removing or reordering other questions never moves a
question, and every kind is split in the same proportion in expectation (the report prints the
counts per part and kind). Never change the seed to get a nicer split: that would be choosing on
the test part.

Example::

    items = load_golden(Path("eval/golden.jsonl"))
    is_relevant(passage_text, items[0].evidence)
    missing_facts("Mixtral activates about 12.9B of its 46.7B parameters.", items[0].answer_facts)
    [i.id for i in items if split_of(i.id) == "test"]
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from core.text import normalise_for_match

KINDS = ("answerable", "unanswerable", "followup")
SPLIT_SEED = "guides-qa-split-v1"
TEST_SHARE = 0.5
PARTS = ("tune", "test")


class GoldenError(ValueError):
    pass


class GoldenLine(BaseModel):
    """One line of the golden set, as written in the JSONL file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    kind: Literal["answerable", "unanswerable", "followup"]
    turns: list[str]
    evidence: list[str]
    answer_keywords: list[str]
    answer_facts: list[list[str]] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("'id' must be a non-empty string")
        return v

    @field_validator("turns")
    @classmethod
    def _turns(cls, v: list[str]) -> list[str]:
        if not v or not all(t.strip() for t in v):
            raise ValueError("'turns' must be a non-empty list of non-empty questions")
        return v

    @field_validator("answer_facts")
    @classmethod
    def _facts(cls, v: list[list[str]] | None) -> list[list[str]] | None:
        for i, fact in enumerate(v or [], start=1):
            if not fact:
                raise ValueError(f"'answer_facts' fact {i} has no variants; give at least one, e.g. [\"12.9B\", \"12.9 billion\"]")
            for var in fact:
                if not normalise_for_match(var.rstrip("*")):
                    raise ValueError(f"'answer_facts' fact {i} has a variant {var!r} with no letters or digits")
        return v

    @model_validator(mode="after")
    def _by_kind(self) -> GoldenLine:
        if self.kind != "unanswerable" and not any(normalise_for_match(e) for e in self.evidence):
            raise ValueError(f"an {self.kind} question needs at least one evidence phrase (exact words from data/guides/)")
        if self.kind == "followup" and len(self.turns) < 2:
            raise ValueError("a followup needs at least two turns")
        if self.kind != "unanswerable" and not self.answer_facts:
            raise ValueError(f"an {self.kind} question needs 'answer_facts': the facts a correct answer states, "
                             "each a list of variants, e.g. [[\"12.9B\", \"12.9 billion\"]]")
        if self.kind == "unanswerable" and self.answer_facts:
            raise ValueError("an unanswerable question has no 'answer_facts' (a correct answer is a refusal); remove it")
        return self


@dataclass(frozen=True)
class GoldenItem:
    id: str
    kind: str
    turns: list[str]
    evidence: list[str]
    answer_keywords: list[str]
    line: int
    answer_facts: tuple[tuple[str, ...], ...] = ()

    @property
    def question(self) -> str:
        return self.turns[-1]

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"

    @property
    def part(self) -> str:
        return split_of(self.id)


def _explain(err: ValidationError) -> str:
    """Pydantic's errors in the file's own words: which field, what is wrong, how to fix it."""
    msgs = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        field = loc[0] if loc else ""
        if e["type"] == "missing":
            msgs.append(f"missing field {field!r}")
        elif e["type"] == "extra_forbidden":
            msgs.append(f"unknown field {field!r}; the fields are {list(GoldenLine.model_fields)}")
        elif e["type"] == "literal_error" and field == "kind":
            msgs.append(f"kind {e['input']!r} is not one of {list(KINDS)}")
        elif e["type"] == "value_error":
            msgs.append(str(e["ctx"]["error"]) if "ctx" in e else e["msg"])
        else:
            where = "".join(f"[{x}]" if x.isdigit() else (f".{x}" if i else x) for i, x in enumerate(loc))
            msgs.append(f"{where!r}: {e['msg']} (got {e['input']!r})")
    return "; ".join(msgs)


def load_golden(path: Path) -> list[GoldenItem]:
    """Parse and validate every line before any work starts; errors name the file and line."""
    if not Path(path).is_file():
        raise GoldenError(f"Golden set {path} not found; pass --golden FILE (JSONL, one question per line).")
    items: list[GoldenItem] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise GoldenError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise GoldenError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            try:
                g = GoldenLine.model_validate(obj)
            except ValidationError as e:
                raise GoldenError(f"{where}: {_explain(e)}") from None
            if g.id in seen:
                raise GoldenError(f"{where}: duplicate id {g.id!r} (first used on line {seen[g.id]}); give it a new id")
            seen[g.id] = n
            items.append(GoldenItem(g.id, g.kind, list(g.turns), list(g.evidence), list(g.answer_keywords), n,
                                    tuple(tuple(f) for f in (g.answer_facts or ()))))
    if not items:
        raise GoldenError(f"Golden set {path} has no questions.")
    return items


def is_relevant(text: str, evidence: list[str]) -> bool:
    """A passage is relevant when its normalised text contains a normalised evidence phrase."""
    t = normalise_for_match(text)
    return any((e := normalise_for_match(p)) and e in t for p in evidence)


# --------------------------------------------------------------------------- answer facts
def _variant_regex(variant: str) -> re.Pattern:
    prefix = variant.rstrip().endswith("*")
    v = normalise_for_match(variant.rstrip().rstrip("*"))
    plural = r"(?:s|es)?" if not prefix and v[-1:].isalpha() else ""       # "metric" also matches "metrics"
    if not prefix and v[-1:].isdigit():
        plural = "x?"                                                      # "2-3" also matches "2-3x" (a multiplier)
    return re.compile(r"(?<![a-z0-9])" + re.escape(v) + (r"[a-z0-9]*" if prefix else plural) + r"(?![a-z0-9])")


def states(answer: str, variant: str) -> bool:
    """Whether the answer states this variant as whole words, after normalising both."""
    return bool(_variant_regex(variant).search(normalise_for_match(answer)))


def states_fact(answer: str, fact) -> bool:
    """Whether the answer states some variant of the fact."""
    return any(states(answer, v) for v in fact)


def missing_facts(answer: str, facts) -> list[str]:
    """The facts (named by their first variant) that the answer states in none of their variants."""
    return [f[0] for f in facts if not states_fact(answer, f)]


# --------------------------------------------------------------------------- tune / test split
def split_of(qid: str, *, seed: str = SPLIT_SEED, test_share: float = TEST_SHARE) -> str:
    """'test' or 'tune', from the id and the seed alone (see the module docstring)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{qid}".encode()).digest()[:8], "big") / 2 ** 64
    return "test" if h < test_share else "tune"


def select_part(items: list[GoldenItem], part: str) -> list[GoldenItem]:
    """The items of one part ('tune' or 'test'); 'all' keeps every item."""
    if part == "all":
        return list(items)
    if part not in PARTS:
        raise GoldenError(f"Unknown split {part!r}; use one of {[*PARTS, 'all']}.")
    return [i for i in items if i.part == part]
