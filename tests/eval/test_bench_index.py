"""`guides bench-index`: a synthetic index through the real store and search code."""

import json

import pytest

from eval.bench_index import KEYS, synthetic_chunks
from guides_qa.cli import main


def test_bench_index_json_has_exactly_the_documented_keys(capsys):
    assert main(["bench-index", "--points", "300", "--queries", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tuple(out) == KEYS
    assert all(out[k] > 0 for k in KEYS) and out["p95_ms"] >= out["p50_ms"]


def test_bench_index_human_output_names_the_setup(capsys):
    assert main(["bench-index", "--points", "200", "--queries", "10"]) == 0
    out = capsys.readouterr().out
    assert "200 chunks, index backend embedded, dense search exact" in out and "p95_ms" in out


def test_bench_index_rejects_a_bad_size(capsys):
    assert main(["bench-index", "--points", "0"]) == 2
    assert "--points must be at least 1, got 0" in capsys.readouterr().err


def test_synthetic_chunks_have_the_project_schema():
    chunks, vecs, queries = synthetic_chunks(50)
    assert vecs.shape == (50, 384) and len({c.chunk_id for c in chunks}) == 50
    p = chunks[0].to_payload()
    assert set(p) >= {"chunk_id", "guide", "guide_title", "section", "lines", "text"} and len(p["text"].split()) >= 25
    assert len(queries) > 100


@pytest.mark.slow
def test_bench_index_at_10k_points(capsys):
    assert main(["bench-index", "--points", "10000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tuple(out) == KEYS
    # Loose bounds (shared 2-core CI machine); the README has the measured figures.
    assert out["open_s"] < 5 and out["p95_ms"] < 300 and out["rss_mb"] < 1024
