"""Practice mode: drill the guides' own interview questions, graded against the guide's answer (no LLM).

- ``ingest.bank``: the question bank ingest publishes with each index version (``practice.jsonl``);
- ``practice.grade``: covered / contradicted / missed per key point, and a score;
- ``practice.schedule``: attempts per profile and a Leitner schedule (SQLite under the data folder).

Example::

    bank = load_bank(settings)
    g = grade(bank[0], "my answer ...")
    PracticeStore(store_path(settings)).record("default", g)
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from ingest.bank import BANK_FILE, BankError, Entry, read_bank

from .schedule import STORE_FILE


def load_bank(settings: Settings) -> list[Entry]:
    """The bank of the current index version; BankError (with the fix) when there is none yet."""
    from ingest.store import IndexLayout, IndexMissingError

    try:
        version = IndexLayout(settings).require_current()
    except IndexMissingError as e:
        raise BankError(f"No index yet, so no practice questions: {e}") from None
    if (version.meta.get("practice") or {}).get("file") != BANK_FILE:
        raise BankError(f"Index version {version.vid} was built before practice mode: run `guides ingest` once "
                        "(vectors are reused) to add the question bank.")
    return read_bank(version.path / BANK_FILE)


def grader_for(settings: Settings, *, embedder=None):
    """``grade(entry, answer)`` as the settings choose: 'lexical' (the key points' words), or 'embed' (also the
    embedder's similarity: pass the loaded embedder)."""
    from .grade import grade

    if settings.practice_grader == "embed":
        if embedder is None:
            raise ValueError("practice_grader='embed' needs the embedder; pass embedder=.")
        return lambda entry, answer: grade(entry, answer, embedder=embedder)
    return lambda entry, answer: grade(entry, answer)


def store_path(settings: Settings) -> Path:
    return settings.data_dir / "practice" / STORE_FILE


def find_entry(bank: list[Entry], qid: str) -> Entry:
    for e in bank:
        if e.id == qid:
            return e
    raise BankError(f"No practice question with id {qid!r}: `guides practice list` shows the ids.")
