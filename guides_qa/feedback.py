"""Thumbs up/down and comments on answers, stored durably in SQLite (<data_dir>/feedback.sqlite).

One row per answer: the rating (+1 / -1 / none) and an optional comment, with the question, the
conversation, the cited answer, its citations, the settings that produced it and timestamps.
WAL mode and one short-lived connection per write make it safe for many app sessions (threads)
and processes at once.

Example::

    store = FeedbackStore.for_settings(settings)
    entry = FeedbackEntry(answer_id="a1", session_id="s1", question="What is LoRA?",
                          answer="LoRA trains low-rank matrices [1].")
    store.set_rating(entry, 1)
    store.set_comment(entry, "clear and cited")
    export(store.path, "feedback.jsonl")              # or fmt="csv"; returns the number of rows
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

FILENAME = "feedback.sqlite"
_INIT_LOCK = threading.Lock()
FORMATS = ("jsonl", "csv")
_JSON_COLUMNS = ("turns", "citations", "settings", "timings")
COLUMNS = ("answer_id", "session_id", "created_at", "updated_at", "rating", "comment", "question", "turns",
           "answer", "refused", "citations", "search_query", "settings", "timings")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    answer_id    TEXT NOT NULL UNIQUE,
    session_id   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    rating       INTEGER CHECK (rating IN (-1, 1)),
    comment      TEXT,
    question     TEXT NOT NULL,
    turns        TEXT NOT NULL,
    answer       TEXT NOT NULL,
    refused      INTEGER NOT NULL,
    citations    TEXT NOT NULL,
    search_query TEXT,
    settings     TEXT NOT NULL,
    timings      TEXT NOT NULL
)
"""


class FeedbackError(ValueError):
    """Bad feedback input or export request; the message says what is allowed."""


@dataclass
class FeedbackEntry:
    """What is stored about one answer besides the rating and the comment."""
    answer_id: str
    session_id: str
    question: str
    answer: str
    turns: list[str] = field(default_factory=list)
    refused: bool = False
    citations: list[dict] = field(default_factory=list)
    search_query: str | None = None
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class FeedbackStore:
    """SQLite feedback table; every call opens its own connection, so one store may serve many threads."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._ready = False

    @classmethod
    def for_settings(cls, settings) -> "FeedbackStore":
        return cls(Path(settings.data_dir) / FILENAME)

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self._init()
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA busy_timeout = 30000")
        con.execute("PRAGMA synchronous = NORMAL")        # durable across app crashes in WAL mode
        return con

    def _init(self) -> None:
        """Create the table and switch to WAL once; other processes may be doing the same."""
        with _INIT_LOCK:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + 30
            while True:
                try:
                    with closing(sqlite3.connect(self.path, timeout=30)) as con:
                        con.execute("PRAGMA busy_timeout = 30000")
                        con.execute("PRAGMA journal_mode = WAL")      # persistent: stored in the file
                        con.execute(_SCHEMA)
                        con.commit()
                    break
                except sqlite3.OperationalError as e:   # a journal-mode switch elsewhere can skip the busy handler
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self._ready = True

    def _upsert(self, entry: FeedbackEntry, column: str, value) -> None:
        row = asdict(entry)
        for k in _JSON_COLUMNS:
            row[k] = json.dumps(row[k], ensure_ascii=False, default=str)
        row["refused"] = int(bool(row["refused"]))
        row["created_at"] = row["updated_at"] = _now()
        row["rating"], row["comment"] = None, None
        row[column] = value
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        sql = (f"INSERT INTO feedback ({cols}) VALUES ({marks}) "
               f"ON CONFLICT(answer_id) DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at")
        with closing(self._connect()) as con, con:
            con.execute(sql, row)

    def set_rating(self, entry: FeedbackEntry, rating: int | None) -> None:
        """+1 (thumbs up), -1 (thumbs down) or None (rating withdrawn) for the answer ``entry`` describes."""
        if rating not in (1, -1, None):
            raise FeedbackError(f"rating must be 1 (up), -1 (down) or None, got {rating!r}")
        self._upsert(entry, "rating", rating)

    def set_comment(self, entry: FeedbackEntry, comment: str | None) -> None:
        """Store (or replace) the free-text comment on the answer; blank clears it."""
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > 5000:
            raise FeedbackError(f"The comment is {len(comment)} characters long; the limit is 5000.")
        self._upsert(entry, "comment", comment)

    def rows(self) -> list[dict]:
        """All feedback, oldest first, with the JSON columns decoded."""
        if not self.path.exists():
            return []
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            rows = [dict(r) for r in con.execute(f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY id")]
        for r in rows:
            for k in _JSON_COLUMNS:
                r[k] = json.loads(r[k])
            r["refused"] = bool(r["refused"])
        return rows

    def get(self, answer_id: str) -> dict | None:
        return next((r for r in self.rows() if r["answer_id"] == answer_id), None)

    def export_text(self, fmt: str = "jsonl") -> str:
        buf = io.StringIO()
        _write(self.rows(), buf, fmt)
        return buf.getvalue()


def _write(rows: list[dict], out: TextIO, fmt: str) -> None:
    if fmt not in FORMATS:
        raise FeedbackError(f"Unknown export format {fmt!r}. Supported formats are: {list(FORMATS)}")
    if fmt == "jsonl":
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
        return
    w = csv.DictWriter(out, fieldnames=list(COLUMNS))
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v, ensure_ascii=False) if k in _JSON_COLUMNS else v for k, v in r.items()})


def export(db: Path | str, out: Path | str | TextIO, fmt: str | None = None) -> int:
    """Write every feedback row of ``db`` to ``out`` (a path, "-" for stdout, or an open text file).

    ``fmt``: "jsonl" or "csv"; by default taken from the output file's suffix (else jsonl).
    Returns the number of rows. Meant for a CLI subcommand, e.g. ``guides feedback export out.csv``.
    """
    import sys

    if fmt is None:
        suffix = Path(out).suffix.lstrip(".").lower() if isinstance(out, (str, Path)) and out != "-" else ""
        fmt = suffix if suffix in FORMATS else "jsonl"
    if not Path(db).exists():
        raise FeedbackError(f"No feedback database at {db}; feedback is stored there once someone rates an answer "
                            f"in the app (set GUIDES_DATA_DIR if it lives elsewhere).")
    rows = FeedbackStore(db).rows()
    if out == "-":
        _write(rows, sys.stdout, fmt)
    elif isinstance(out, (str, Path)):
        with open(out, "w", encoding="utf-8", newline="") as f:
            _write(rows, f, fmt)
    else:
        _write(rows, out, fmt)
    return len(rows)
