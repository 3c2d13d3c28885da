"""A damaged data folder is found, named and repaired: manifests, `guides check`, and `guides ingest`."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ingest.embed import HashEmbedder
from ingest.manifest import MANIFEST, verify
from ingest.pipeline import run_ingest
from ingest.store import IndexDamagedError, IndexLayout


@pytest.fixture
def built(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    return s


def flip(path, at: int = 100, n: int = 8) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, min(at + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def check(s, capsys, *args):
    from guides_qa.cli import main

    rc = main(["check", "--data-dir", str(s.data_dir), "--guides-dir", str(s.guides_dir), *args])
    return rc, capsys.readouterr().out


def test_every_published_file_is_in_the_manifest_and_verifies(built):
    v = IndexLayout(built).require_current()
    man = json.loads((v.path / MANIFEST).read_text())
    assert {"meta.json", "chunks.jsonl", "vectors.npy", "practice.jsonl"} <= set(man["files"])
    assert any(f.startswith("shard/") for f in man["files"]) and verify(v.path) == []


def test_the_manifest_is_written_before_publishing(built, monkeypatch):
    layout = IndexLayout(built)
    before = layout.current_vid()
    (built.guides_dir / "new.md").write_text("# New\n\n## What is new?\n\nSomething new here for the index.\n")

    def boom(self, vid):
        assert (self.partial_path(vid) / MANIFEST).exists()        # written, not yet published
        raise OSError("disk full")

    monkeypatch.setattr(IndexLayout, "publish", boom)
    with pytest.raises(OSError):
        run_ingest(built, embedder=HashEmbedder(), progress=False)
    assert layout.current_vid() == before and verify(layout.require_current().path) == []


@pytest.mark.parametrize("target,reused", [("chunks.jsonl", False), ("vectors.npy", False), ("shard", True),
                                           ("practice.jsonl", True)])
def test_a_damaged_file_is_named_by_check_and_ingest_repairs_it(built, capsys, target, reused):
    layout = IndexLayout(built)
    v = layout.require_current()
    path = v.path / target
    if target == "shard":
        path = max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    flip(path)
    rc, out = check(built, capsys)
    assert rc == 1 and "damaged" in out and path.relative_to(v.path).as_posix() in out and "fix: guides ingest" in out
    summary = run_ingest(built, embedder=HashEmbedder(), progress=False)
    assert summary.damaged and not summary.nothing_changed and summary.version != v.vid
    assert (summary.embedded == 0) is reused                          # vectors reused only from intact files
    assert (layout.versions / f"{v.vid}.damaged").is_dir()            # kept aside for inspection
    rc, out = check(built, capsys)
    assert rc == 0 and "set aside" in out
    again = run_ingest(built, embedder=HashEmbedder(), progress=False)
    assert again.nothing_changed and not (layout.versions / f"{v.vid}.damaged").exists()


def test_damaged_chunks_are_a_one_line_error_for_readers(built, capsys):
    from guides_qa.cli import main

    v = IndexLayout(built).require_current()
    flip(v.path / "chunks.jsonl", at=10)
    with pytest.raises(IndexDamagedError, match="chunks.jsonl is damaged near line 1.*guides ingest"):
        v.chunks()
    rc = main(["eval", "--retrieve-only", "--limit", "2", "--quiet", "--data-dir", str(built.data_dir),
               "--guides-dir", str(built.guides_dir), "--out", str(built.data_dir / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "chunks.jsonl is damaged" in err and "Traceback" not in err


@pytest.mark.parametrize("target", ["meta.json", "CURRENT"])
def test_damaged_metadata_or_pointer_is_rebuilt(built, capsys, target):
    layout = IndexLayout(built)
    v = layout.require_current()
    path = (v.path / "meta.json") if target == "meta.json" else layout.root / "CURRENT"
    path.write_bytes(b"\xff\xfe{garbage")
    rc, out = check(built, capsys)
    assert rc == 1 and target in out
    summary = run_ingest(built, embedder=HashEmbedder(), progress=False)
    assert summary.damaged and summary.rebuild_reason == "the index is damaged"
    assert verify(layout.require_current().path) == [] and check(built, capsys)[0] == 0


def test_check_names_a_damaged_database_and_model_file(built, capsys):
    from core.bundled import BUNDLED_MODELS
    from guides_qa.feedback import FILENAME

    (built.data_dir / FILENAME).write_bytes(b"SQLite format 3\x00" + b"\x00" * 100 + b"garbage" * 200)
    m = BUNDLED_MODELS["bundled"]
    (built.data_dir / "models").mkdir(exist_ok=True)
    (built.data_dir / "models" / f"{m.file_name}.gguf").write_bytes(b"GGUF" + b"\x00" * 1000)
    rc, out = check(built, capsys, "--quick")
    assert rc == 1
    assert "feedback database" in out and "model bundled" in out and "expected 1,117,320,768" in out
    assert "guides prepare" in out
    rows = json.loads(check(built, capsys, "--json")[1])
    assert {r["what"] for r in rows if r["state"] == "damaged"} == {"feedback database", "model bundled"}


def test_a_sound_sqlite_store_passes(built, capsys):
    from practice import store_path
    from practice.schedule import PracticeStore

    PracticeStore(store_path(built)).close()
    rc, out = check(built, capsys)
    assert rc == 0 and "practice history" in out


def test_no_op_ingest_checks_the_manifest_quickly(built):
    s = run_ingest(built, embedder=HashEmbedder(), progress=False)
    assert s.nothing_changed and "check" in s.seconds and s.seconds["check"] < 5
