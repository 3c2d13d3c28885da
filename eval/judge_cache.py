"""Judgements cached by content, in SQLite under the data folder.

A judgement is one ragas metric's score for one answer. Its key is the sha256 of everything the score
depends on: the judge (``SchemaJudge.identity``: the model file's sha256, or endpoint + model name, and
its output bounds), the ragas version, the metric, the question, the answer and the contexts. So a rerun
whose answers did not change judges nothing, and an answer that changed is judged again. A judge failure
(NaN) is not stored: the next run tries it again.

The database runs in WAL mode with a busy timeout, so two eval runs can share it; each judgement is
committed as soon as it is made, so Ctrl-C loses at most the ones in flight.

Example::

    cache = JudgeCache(settings.data_dir / "eval" / "judge_cache.sqlite")
    k = judgement_key("sha256:cc32...", "faithfulness", "What is LoRA?", "LoRA is ... [1]", ["passage"])
    if (v := cache.get(k)) is None:
        cache.put(k, "faithfulness", 0.75)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

CACHE_FILE = "judge_cache.sqlite"


class JudgeCacheError(RuntimeError):
    """The cache file cannot be opened or read; the message says how to fix it."""


def ragas_version() -> str:
    try:
        import ragas

        return ragas.__version__
    except Exception:  # noqa: BLE001 - no ragas: no judged metrics, the key still works for fakes
        return "none"


def judgement_key(judge: str, metric: str, question: str, answer: str, contexts: list[str]) -> str:
    blob = json.dumps([judge, ragas_version(), metric, question, answer, list(contexts)], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class JudgeCache:
    """One SQLite file of judgements; thread-safe, shared safely between processes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.hits = 0
        self.stored = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, metric TEXT NOT NULL, "
                             "value REAL NOT NULL, created REAL NOT NULL)")
        except sqlite3.DatabaseError as e:
            raise JudgeCacheError(f"The judgement cache {self.path} cannot be opened ({e}). Delete the file (it is only "
                                  f"a cache) or run with --no-judge-cache.") from e

    def get(self, key: str) -> float | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM judgements WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as e:
                raise JudgeCacheError(f"The judgement cache {self.path} is damaged ({e}). Delete the file (it is only "
                                      f"a cache) or run with --no-judge-cache.") from e
        if row is None:
            return None
        self.hits += 1
        return float(row[0])

    def put(self, key: str, metric: str, value: float) -> None:
        if value != value:      # NaN: a failed judgement is tried again next time
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO judgements (key, metric, value, created) VALUES (?, ?, ?, ?)",
                             (key, metric, float(value), time.time()))
            self.stored += 1

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
