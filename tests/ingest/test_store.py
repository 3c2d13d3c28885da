"""Published versions: read by several processes at once, never written, pruned only when no process has them open."""

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal

import numpy as np
import pytest

from pipeline.qa import Pipeline
from ingest.embed import HashEmbedder
from ingest.pipeline import run_ingest
from ingest.store import LEASE, IndexError_, IndexLayout


def _reader(data_dir, guides_dir, cmd, out):
    """A separate process with its own Pipeline: 'ask' answers one question, 'stop' exits."""
    from core.settings import Settings
    from pipeline.qa import Pipeline
    from ingest.embed import HashEmbedder

    s = Settings(guides_dir=guides_dir, data_dir=data_dir, embed_model="fake:hash", reranker="off", llm="fake")
    pipe = Pipeline(s, embedder=HashEmbedder())
    while True:
        c = cmd.get(timeout=120)
        if c == "stop":
            break
        hits = pipe.retrieve([c]).hits
        out.put((pipe.index.version.vid, [h.chunk_id for h in hits]))
    pipe.close()


@pytest.fixture
def reader_process(fake_settings):
    ctx = mp.get_context("spawn")
    procs = []

    def start(s):
        cmd, out = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=_reader, args=(s.data_dir, s.guides_dir, cmd, out), daemon=True)
        p.start()
        procs.append((p, cmd))

        def ask(q):
            cmd.put(q)
            return out.get(timeout=120)
        return p, ask, cmd

    yield start
    for p, cmd in procs:
        if p.is_alive():
            cmd.put("stop")
            p.join(30)
        if p.is_alive():
            p.kill()


def _edit(guides_dir, i):
    (guides_dir / f"extra{i}.md").write_text(f"# Extra {i}\n\n## Topic {i}\n\nSpeculative decoding drafts tokens {i}.\n")


def _snapshot(path):
    """Every file's bytes (the engine re-writes identical bytes on open, so modification times are no guide)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_two_processes_read_one_published_version_and_nothing_writes_to_it(guides_copy, fake_settings, reader_process):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    v = IndexLayout(s).require_current()
    before = _snapshot(v.path)
    _, ask, _ = reader_process(s)
    vid_other, ids_other = ask("kv cache keys values")          # the other process now holds the version open
    pipe = Pipeline(s, embedder=HashEmbedder())                   # ...and this one opens it too
    here = pipe.retrieve(["kv cache keys values"]).hits
    assert vid_other == v.vid == pipe.index.version.vid and [h.chunk_id for h in here] == ids_other and ids_other
    assert ask("kv cache keys values") == (vid_other, ids_other)  # both keep answering
    pipe.close()
    assert _snapshot(v.path) == before                            # opening, searching, closing changed no byte


def test_prune_skips_versions_a_process_has_open_and_the_reader_moves_on(guides_copy, fake_settings, reader_process):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    layout = IndexLayout(s)
    v1 = layout.current_vid()
    _, ask, _ = reader_process(s)
    assert ask("speculative decoding")[0] == v1
    for i in range(3):                                  # v2, v3, v4: keep=2 would drop v1 and v2
        _edit(guides_copy, i)
        run_ingest(s, embedder=HashEmbedder(), progress=False)
    names = {p.name for p in layout.versions.iterdir()}
    assert v1 in names and len(names) == 3                # v1 is open in the reader: kept; v2 pruned
    # The reader answered from v1 while it was open; its next question moves it to the newest version...
    vid, ids = ask("speculative decoding drafts tokens 2")
    assert vid == layout.current_vid() != v1
    # ...and releases v1, so the next cleanup removes it.
    assert v1 in layout.cleanup() and not (layout.versions / v1).exists()


def test_a_crashed_reader_does_not_pin_its_version(guides_copy, fake_settings, reader_process):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    layout = IndexLayout(s)
    v1 = layout.current_vid()
    p, ask, _ = reader_process(s)
    ask("attention")
    for i in range(2):
        _edit(guides_copy, i)
        run_ingest(s, embedder=HashEmbedder(), progress=False)
    assert (layout.versions / v1).exists()
    os.kill(p.pid, signal.SIGKILL)                         # no close(), no cleanup: the kernel drops the flock
    p.join(30)
    assert v1 in layout.cleanup()


def test_a_reader_that_loses_the_race_to_cleanup_opens_the_current_version(guides_copy, fake_settings):
    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    layout = IndexLayout(s)
    v1 = layout.require_current()
    _edit(guides_copy, 0)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    # CURRENT moved to v2 and v1's folder vanished after a reader read the old CURRENT: it retries.
    real = layout.require_current
    calls = []

    def stale_then_real():
        calls.append(1)
        if len(calls) == 1:
            shutil.rmtree(v1.path)
            return v1
        return real()

    layout.require_current = stale_then_real
    v, lease = layout.lease_current()
    assert v.vid != v1.vid and len(calls) == 2 and lease.fd is not None
    lease.release()


def test_old_local_mode_index_is_detected_and_rebuilt_once(guides_copy, fake_settings):
    """An index written by qdrant-client local mode (before qdrant-edge) is rebuilt once, vectors reused."""
    from qdrant_client import QdrantClient, models

    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    v = IndexLayout(s).require_current()
    vectors = v.vectors()
    # Turn it into what the previous code left: a qdrant-client local-mode folder, no "index" in meta, no lease.
    shutil.rmtree(v.path / "shard")
    (v.path / LEASE).unlink()
    client = QdrantClient(path=str(v.path / "qdrant"))
    client.create_collection(v.meta["collection"], vectors_config={"dense": models.VectorParams(
        size=vectors.shape[1], distance=models.Distance.COSINE)}, sparse_vectors_config={"bm25": models.SparseVectorParams()})
    client.close()
    meta = dict(v.meta)
    del meta["index"]
    (v.path / "meta.json").write_text(json.dumps(meta))

    with pytest.raises(IndexError_, match="qdrant-client's local mode.*Run `guides ingest`"):
        Pipeline(s, embedder=HashEmbedder()).retrieve(["attention"])
    emb_calls = []

    class Counting(HashEmbedder):
        def embed(self, texts, **kw):
            emb_calls.append(len(texts))
            return super().embed(texts, **kw)

    summary = run_ingest(s, embedder=Counting(), progress=False)
    assert "qdrant-client's local mode" in summary.index_rebuild_reason and sum(emb_calls) == 0
    assert "Rebuilding the index once" in summary.render()
    new = IndexLayout(s).require_current()
    assert new.vid != v.vid and np.array_equal(new.vectors(), vectors)
    pipe = Pipeline(s, embedder=HashEmbedder())
    assert pipe.retrieve(["attention"]).hits
    pipe.close()
    assert run_ingest(s, embedder=Counting(), progress=False).nothing_changed        # once


def test_dense_threshold_picks_hnsw_and_a_change_rebuilds_only_the_index(guides_copy, fake_settings):
    s = fake_settings(guides_copy, dense_exact_max_points=10)
    first = run_ingest(s, embedder=HashEmbedder(), progress=False)
    assert IndexLayout(s).require_current().index_info["dense_index"] == "hnsw"
    pipe = Pipeline(s, embedder=HashEmbedder())
    hnsw_ids = [h.chunk_id for h in pipe.retrieve(["kv cache keys values"], mode="dense").hits]
    pipe.close()
    s2 = fake_settings(guides_copy)
    again = run_ingest(s2, embedder=HashEmbedder(), progress=False)
    assert "'exact'" in again.index_rebuild_reason and again.embedded == 0 and again.version != first.version
    pipe = Pipeline(s2, embedder=HashEmbedder())
    exact_ids = [h.chunk_id for h in pipe.retrieve(["kv cache keys values"], mode="dense").hits]
    pipe.close()
    assert hnsw_ids[:5] == exact_ids[:5]


def test_version_names_sort_in_creation_order(tmp_path, fake_settings):
    layout = IndexLayout(fake_settings(tmp_path))
    vids = [layout.new_vid() for _ in range(2000)]
    assert sorted(vids) == vids and len(set(vids)) == len(vids)
