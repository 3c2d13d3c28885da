"""Ingest end to end with the hash embedder and a real embedded Qdrant: fast, deterministic."""

import json
import multiprocessing as mp

import pytest

from pipeline.qa import Pipeline
from ingest.embed import HashEmbedder
from ingest.pipeline import run_ingest
from ingest.store import IndexLayout, IndexLockedError, IndexMissingError


class CountingEmbedder(HashEmbedder):
    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.calls = 0
        self.fail_after = fail_after

    def embed(self, texts, **kw):
        self.calls += len(texts)
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C while embedding")
        return super().embed(texts, **kw)


def _search_ids(settings, query="low-rank adapters"):
    pipe = Pipeline(settings, embedder=HashEmbedder())
    try:
        return [h.chunk_id for h in pipe.retrieve([query]).hits]
    finally:
        pipe.close()


def test_full_then_noop_then_change_then_delete(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    emb = CountingEmbedder()
    first = run_ingest(s, embedder=emb, progress=False)
    assert first.files_read == 5 and first.n_chunks > 100
    assert first.added == first.n_chunks == first.embedded == emb.calls
    assert first.token_stats["max"] <= 256

    emb.calls = 0
    again = run_ingest(s, embedder=emb, progress=False)
    assert again.nothing_changed and emb.calls == 0 and again.version == first.version

    # Change one section of one guide: only that guide's changed chunks are embedded.
    g = guides_copy / "100-llm-interview-questions.md"
    g.write_text(g.read_text().replace("A Large Language Model is a type", "A Large Language Model (edited) is a type"))
    changed = run_ingest(s, embedder=emb, progress=False)
    assert changed.updated == 1 and changed.added == 0 and changed.removed == 0
    assert emb.calls == 1 and changed.unchanged == first.n_chunks - 1

    # Delete a guide: its chunks disappear from the index and from search.
    gone = "llm-interview-questions-webpage.txt"
    (guides_copy / gone).unlink()
    emb.calls = 0
    deleted = run_ingest(s, embedder=emb, progress=False)
    assert emb.calls == 0 and deleted.removed > 0 and deleted.n_chunks == first.n_chunks - deleted.removed
    version = IndexLayout(s).require_current()
    assert all(c.guide != gone for c in version.chunks())
    pipe = Pipeline(s, embedder=HashEmbedder())
    hits = pipe.retrieve(["continuous batching prefill decode paged attention"]).hits
    pipe.close()
    assert hits and all(h.payload["guide"] != gone for h in hits)


def test_settings_change_forces_rebuild_and_says_why(guides_copy, fake_settings):
    run_ingest(fake_settings(guides_copy), embedder=HashEmbedder(), progress=False)
    emb = CountingEmbedder()
    s2 = fake_settings(guides_copy, chunk_target_tokens=128)
    summary = run_ingest(s2, embedder=emb, progress=False)
    assert "chunk_target_tokens changed from 256 to 128" in summary.rebuild_reason
    assert emb.calls == summary.n_chunks
    assert "Full rebuild" in summary.render()


def test_skipped_files_are_counted_and_named(guides_copy, fake_settings, capsys):
    (guides_copy / "empty.md").write_text("")
    (guides_copy / "image.md").write_bytes(b"\x89PNG\x00\x00\x00")
    (guides_copy / "latin1.txt").write_bytes("r\xe9sum\xe9".encode("latin-1"))
    summary = run_ingest(fake_settings(guides_copy), embedder=HashEmbedder(), progress=False)
    assert summary.files_read == 5 and len(summary.files_skipped) == 3
    out = summary.render()
    assert "3 skipped" in out and "empty.md" in out and "image.md" in out and "latin1.txt" in out
    assert "latin1.txt" in capsys.readouterr().err


def test_interrupted_ingest_leaves_previous_index_usable(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    before = _search_ids(s)
    vid = IndexLayout(s).current_vid()
    g = guides_copy / "llm-interview-prep-guide.md"
    g.write_text(g.read_text() + "\n\n## New Section\n\n" + "\n\n".join(f"new para {i} " * 30 for i in range(40)))
    with pytest.raises(KeyboardInterrupt):
        run_ingest(s, embedder=CountingEmbedder(fail_after=3), progress=False, rebuild=True)
    assert IndexLayout(s).current_vid() == vid
    assert _search_ids(s) == before
    # A crash while writing the index (after embedding) also leaves the old version published.
    class BrokenQdrant(Exception):
        pass

    import ingest.pipeline as ip
    orig = ip._write_index

    def boom(*a, **k):
        orig(*a, **k)
        raise BrokenQdrant("disk full")

    ip._write_index = boom
    try:
        with pytest.raises(BrokenQdrant):
            run_ingest(s, embedder=HashEmbedder(), progress=False)
    finally:
        ip._write_index = orig
    assert IndexLayout(s).current_vid() == vid
    assert list(IndexLayout(s).versions.glob("*.partial"))
    # The next run cleans up the half-built version and publishes a new one.
    summary = run_ingest(s, embedder=HashEmbedder(), progress=False)
    assert summary.version != vid and not list(IndexLayout(s).versions.glob("*.partial"))


def _hold_index(data_dir, guides_dir, ready, release):
    from core.settings import Settings
    from ingest.embed import HashEmbedder
    from pipeline.qa import Pipeline

    s = Settings(guides_dir=guides_dir, data_dir=data_dir, embed_model="fake:hash", reranker="off", llm="fake")
    pipe = Pipeline(s, embedder=HashEmbedder())
    pipe.retrieve(["attention"])
    ready.set()
    release.wait(60)
    pipe.close()


def test_ingest_works_while_another_process_holds_the_index(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_index, args=(s.data_dir, guides_copy, ready, release))
    p.start()
    try:
        assert ready.wait(60)
        old = IndexLayout(s).require_current()
        # The other process holds the version open; this one reads it at the same time...
        assert _search_ids(s, "attention")
        # ...and an ingest builds a new version beside it and publishes it.
        (guides_copy / "extra.md").write_text("# Extra\n\n## Topic\n\nSpeculative decoding drafts tokens with a small model.\n")
        summary = run_ingest(s, embedder=HashEmbedder(), progress=False)
        assert summary.added >= 1 and summary.version != old.vid
        assert old.path.exists()          # still held open, so not deleted
    finally:
        release.set()
        p.join(30)
    assert "Speculative" in " ".join(
        h.text for h in Pipeline(s, embedder=HashEmbedder()).retrieve(["speculative decoding drafts"]).hits)


def test_second_concurrent_ingest_is_refused_clearly(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    with IndexLayout(s).ingest_lock():
        with pytest.raises(IndexLockedError, match="Another `guides ingest`"):
            run_ingest(s, embedder=HashEmbedder(), progress=False)


def test_search_without_index_says_what_to_run(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    with pytest.raises(IndexMissingError, match="guides ingest"):
        Pipeline(s, embedder=HashEmbedder()).retrieve(["anything"])


def test_meta_records_what_the_eval_needs(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    meta = json.loads((IndexLayout(s).require_current().path / "meta.json").read_text())
    assert set(meta["files"]) == {p.name for p in guides_copy.iterdir()}
    assert meta["seconds"]["total"] > 0 and meta["bm25"]["n_docs"] == meta["n_chunks"]
    assert sum(g["chunks"] for g in meta["guides"].values()) == meta["n_chunks"]


def test_embedding_goes_in_batches_and_progress_counts_chunks(guides_copy, fake_settings):
    sizes, notes = [], []

    class Recording(HashEmbedder):
        def embed(self, texts, **kw):
            sizes.append(len(texts))
            return super().embed(texts, **kw)

    s = fake_settings(guides_copy, embed_batch_size=16)
    summary = run_ingest(s, embedder=Recording(), progress=False, on_stage=lambda st, f: notes.append((st, f)))
    assert max(sizes) == 16 and sum(sizes) == summary.n_chunks
    embeds = [st for st, _ in notes if st.startswith("embedding (")]
    assert embeds[-1] == f"embedding ({summary.n_chunks}/{summary.n_chunks} chunks)"
    assert any(st.startswith("writing the index (") for st, _ in notes)
    assert [f for _, f in notes] == sorted(f for _, f in notes) and notes[-1] == ("done", 1.0)


def test_eta_text():
    import time

    from ingest.store import eta

    t0 = time.perf_counter() - 10            # 10 s for the first 100 of 1000
    assert eta(t0, 100, 1000) == ", about 2 min left"
    assert eta(time.perf_counter() - 10, 500, 1000) == ", about 10 s left"
    assert eta(t0, 1000, 1000) == "" and eta(time.perf_counter(), 1, 10) == ""
