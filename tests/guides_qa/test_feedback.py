"""The SQLite feedback store: upserts per answer, WAL, concurrent writers, JSONL/CSV export."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import sqlite3
import threading

import pytest

from guides_qa.feedback import FeedbackEntry, FeedbackError, FeedbackStore, export


def entry(i: int = 1, **kw) -> FeedbackEntry:
    base = dict(answer_id=f"a{i}", session_id="s1", question=f"What is LoRA? ({i})", answer="LoRA trains B and A [1].",
                turns=["What is LoRA?"], citations=[{"n": 1, "chunk_id": "c1", "verified": True}],
                search_query="What is LoRA?", settings={"llm": "fake", "top_k": 10}, timings={"total": 12.5})
    base.update(kw)
    return FeedbackEntry(**base)


def test_rating_and_comment_update_one_row(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    assert store.rows() == []
    store.set_rating(entry(), 1)
    store.set_comment(entry(), "  good answer  ")
    store.set_rating(entry(), -1)
    rows = store.rows()
    assert len(rows) == 1
    r = rows[0]
    assert (r["rating"], r["comment"], r["refused"]) == (-1, "good answer", False)
    assert r["citations"] == [{"n": 1, "chunk_id": "c1", "verified": True}] and r["settings"]["llm"] == "fake"
    assert r["created_at"] and r["updated_at"] >= r["created_at"]
    store.set_rating(entry(), None)              # thumbs withdrawn; the comment stays
    assert store.get("a1")["rating"] is None and store.get("a1")["comment"] == "good answer"
    with sqlite3.connect(store.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_invalid_input_raises(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    with pytest.raises(FeedbackError, match="rating must be"):
        store.set_rating(entry(), 5)
    with pytest.raises(FeedbackError, match="limit is 5000"):
        store.set_comment(entry(), "x" * 5001)


def test_for_settings_lives_in_the_data_dir(tmp_path):
    from core.settings import Settings

    assert FeedbackStore.for_settings(Settings(data_dir=tmp_path)).path == tmp_path / "feedback.sqlite"


def test_concurrent_threads_lose_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    errors = []

    def work(k: int):
        try:
            for i in range(15):
                n = k * 100 + i
                store.set_rating(entry(n), 1 if n % 2 else -1)
                store.set_comment(entry(n), f"comment {n}")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = store.rows()
    assert not errors and len(rows) == 90 and all(r["comment"] == f"comment {r['answer_id'][1:]}" for r in rows)


def _proc_write(path: str, k: int) -> None:
    store = FeedbackStore(path)
    for i in range(10):
        store.set_rating(entry(k * 100 + i), 1)


def test_concurrent_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "fb.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_proc_write, args=(path, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(FeedbackStore(path).rows()) == 30


def test_export_jsonl_and_csv(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.set_rating(entry(1), 1)
    store.set_comment(entry(2, question='Quotes "and", commas\nnewline'), "meh")
    assert export(store.path, tmp_path / "out.jsonl") == 2
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["answer_id"] for x in lines] == ["a1", "a2"] and lines[0]["rating"] == 1
    assert lines[1]["citations"][0]["chunk_id"] == "c1"

    assert export(store.path, tmp_path / "out.csv") == 2                 # format from the suffix
    rows = list(csv.DictReader(open(tmp_path / "out.csv", newline="", encoding="utf-8")))
    assert rows[1]["question"] == 'Quotes "and", commas\nnewline' and rows[1]["comment"] == "meh"
    assert json.loads(rows[0]["settings"])["llm"] == "fake"

    buf = io.StringIO()
    assert export(store.path, buf, fmt="csv") == 2 and buf.getvalue().startswith("answer_id,")
    assert store.export_text("jsonl").count("\n") == 2


def test_export_errors(tmp_path):
    with pytest.raises(FeedbackError, match="No feedback database"):
        export(tmp_path / "missing.sqlite", tmp_path / "x.jsonl")
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.set_rating(entry(), 1)
    with pytest.raises(FeedbackError, match="Supported formats"):
        export(store.path, io.StringIO(), fmt="xml")
