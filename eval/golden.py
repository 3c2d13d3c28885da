"""Load and validate a golden set (JSONL); judge passage relevance by evidence phrases.

Line format: {"id", "kind": "answerable"|"unanswerable"|"followup", "turns": [...],
"evidence": [exact phrases from the guides], "answer_keywords": [...]}.

Example::

    items = load_golden(Path("eval/golden.jsonl"))
    is_relevant(passage_text, items[0].evidence)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ingest.clean import normalise_for_match

KINDS = ("answerable", "unanswerable", "followup")


class GoldenError(ValueError):
    pass


@dataclass(frozen=True)
class GoldenItem:
    id: str
    kind: str
    turns: list[str]
    evidence: list[str]
    answer_keywords: list[str]
    line: int

    @property
    def question(self) -> str:
        return self.turns[-1]

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"


def load_golden(path: Path) -> list[GoldenItem]:
    """Parse and validate every line before any work starts; errors name the line."""
    if not Path(path).is_file():
        raise GoldenError(f"Golden set {path} not found; pass --golden FILE (JSONL, one question per line).")
    items: list[GoldenItem] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise GoldenError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise GoldenError(f"{where}: expected a JSON object")
            for key in ("id", "kind", "turns", "evidence", "answer_keywords"):
                if key not in obj:
                    raise GoldenError(f"{where}: missing field {key!r}")
            if obj["kind"] not in KINDS:
                raise GoldenError(f"{where}: kind {obj['kind']!r} is not one of {list(KINDS)}")
            turns = obj["turns"]
            if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
                raise GoldenError(f"{where}: 'turns' must be a non-empty list of non-empty questions")
            for key in ("evidence", "answer_keywords"):
                if not isinstance(obj[key], list) or not all(isinstance(x, str) for x in obj[key]):
                    raise GoldenError(f"{where}: {key!r} must be a list of strings")
            if obj["kind"] != "unanswerable" and not any(normalise_for_match(e) for e in obj["evidence"]):
                raise GoldenError(f"{where}: an {obj['kind']} question needs at least one evidence phrase")
            if obj["kind"] == "followup" and len(turns) < 2:
                raise GoldenError(f"{where}: a followup needs at least two turns")
            qid = str(obj["id"])
            if qid in seen:
                raise GoldenError(f"{where}: duplicate id {qid!r}")
            seen.add(qid)
            items.append(GoldenItem(qid, obj["kind"], list(turns), list(obj["evidence"]), list(obj["answer_keywords"]), n))
    if not items:
        raise GoldenError(f"Golden set {path} has no questions.")
    return items


def is_relevant(text: str, evidence: list[str]) -> bool:
    """A passage is relevant when its normalised text contains a normalised evidence phrase."""
    t = normalise_for_match(text)
    return any((e := normalise_for_match(p)) and e in t for p in evidence)
