"""Spaced repetition: attempts stored per practice profile, each question's next due date by a Leitner schedule.

A question sits in one of ``len(INTERVALS_DAYS)`` boxes. A graded attempt moves it:

- score ≥ ``PROMOTE_AT``: one box up (a longer wait before it is due again);
- score < ``DEMOTE_BELOW``: back to box 1 (due tomorrow);
- in between: it stays in its box.

It is next due ``INTERVALS_DAYS[box - 1]`` days after the attempt. A question is *mastered* once it sits in the
last box. Attempts are kept (SQLite at ``<data_dir>/practice/practice.sqlite``, WAL mode), so a person's
history survives restarts, and several profiles ("me", "mock-interview") keep separate schedules.

Example::

    store = PracticeStore(settings.data_dir / "practice" / STORE_FILE)
    store.record("default", grade)                 # a practice.grade.Grade
    print(store.counts("default", bank))           # {"due": 3, "new": 140, "mastered": 2, "seen": 10}
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STORE_FILE = "practice.sqlite"
INTERVALS_DAYS = (1, 2, 4, 8, 16)
PROMOTE_AT = 0.8
DEMOTE_BELOW = 0.5
DAY = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    profile TEXT NOT NULL, qid TEXT NOT NULL, at REAL NOT NULL, score REAL NOT NULL,
    answer TEXT NOT NULL, covered INTEGER NOT NULL, missed INTEGER NOT NULL, contradicted INTEGER NOT NULL,
    guide TEXT NOT NULL DEFAULT '', section TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS attempts_by_profile ON attempts(profile, qid, at);
CREATE TABLE IF NOT EXISTS schedule (
    profile TEXT NOT NULL, qid TEXT NOT NULL, box INTEGER NOT NULL, due REAL NOT NULL, last_score REAL NOT NULL,
    attempts INTEGER NOT NULL, PRIMARY KEY (profile, qid));
"""


class PracticeStoreError(RuntimeError):
    """The practice database cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Slot:
    qid: str
    box: int
    due: float            # epoch seconds
    last_score: float
    attempts: int


def next_slot(prev: Slot | None, qid: str, score: float, now: float) -> Slot:
    """Where a question goes after an attempt scored ``score`` at ``now`` (the Leitner rule above)."""
    box = prev.box if prev else 0
    if score >= PROMOTE_AT:
        box = min(len(INTERVALS_DAYS), box + 1)
    elif score < DEMOTE_BELOW or box == 0:
        box = 1
    return Slot(qid, box, now + INTERVALS_DAYS[box - 1] * DAY, score, (prev.attempts if prev else 0) + 1)


class PracticeStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise PracticeStoreError(f"The practice database {self.path} is damaged or not a database ({e}). Move it "
                                     "aside to start a fresh history (your attempts in it are lost).") from None
        except OSError as e:
            raise PracticeStoreError(f"Cannot open the practice database {self.path} ({e}); check the data folder "
                                     "is writable (setting data_dir).") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def slots(self, profile: str) -> dict[str, Slot]:
        with self._lock:
            rows = self._db.execute("SELECT qid, box, due, last_score, attempts FROM schedule WHERE profile=?",
                                    (profile,)).fetchall()
        return {r[0]: Slot(*r) for r in rows}

    def record(self, profile: str, grade, *, now: float | None = None) -> Slot:
        """Store one graded attempt and move its question in the schedule; returns the new slot."""
        now = time.time() if now is None else now
        e = grade.entry
        with self._lock, self._db:
            row = self._db.execute("SELECT qid, box, due, last_score, attempts FROM schedule WHERE profile=? AND qid=?",
                                   (profile, e.id)).fetchone()
            slot = next_slot(Slot(*row) if row else None, e.id, grade.score, now)
            self._db.execute("INSERT INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (profile, e.id, now, grade.score, grade.answer, len(grade.covered), len(grade.missed),
                              len(grade.contradicted), e.guide, e.section))
            self._db.execute("INSERT OR REPLACE INTO schedule VALUES (?,?,?,?,?,?)",
                             (profile, e.id, slot.box, slot.due, slot.last_score, slot.attempts))
        return slot

    def history(self, profile: str) -> list[dict]:
        """Every attempt of ``profile``, oldest first: when, which question, the score, the guide."""
        with self._lock:
            rows = self._db.execute("SELECT qid, at, score, guide FROM attempts WHERE profile=? ORDER BY at",
                                    (profile,)).fetchall()
        return [{"id": q, "at": at, "score": s, "guide": g} for q, at, s, g in rows]

    def profiles(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT profile FROM attempts ORDER BY profile")]

    # -- what to practise ---------------------------------------------------------------------------------
    def due(self, profile: str, entries: list, *, now: float | None = None) -> list:
        """``entries`` due now (oldest due first), then the ones never tried, in the bank's order."""
        now = time.time() if now is None else now
        slots = self.slots(profile)
        due = sorted((e for e in entries if e.id in slots and slots[e.id].due <= now), key=lambda e: slots[e.id].due)
        return due + [e for e in entries if e.id not in slots]

    def counts(self, profile: str, entries: list, *, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        slots = self.slots(profile)
        seen = [e for e in entries if e.id in slots]
        return {"questions": len(entries), "seen": len(seen), "new": len(entries) - len(seen),
                "due": sum(slots[e.id].due <= now for e in seen),
                "mastered": sum(slots[e.id].box == len(INTERVALS_DAYS) for e in seen)}


def filter_entries(entries: list, *, guide: str | None = None, section: str | None = None) -> list:
    """Entries of one guide (file name, or a part of it) and/or whose section path contains ``section``."""
    out = entries
    if guide:
        out = [e for e in out if guide.casefold() in e.guide.casefold()]
    if section:
        out = [e for e in out if section.casefold() in e.section.casefold()]
    return out


def to_json(slot: Slot) -> str:
    return json.dumps({"id": slot.qid, "box": slot.box, "due": slot.due, "last_score": slot.last_score,
                       "attempts": slot.attempts})
