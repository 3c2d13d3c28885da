"""What the trained reranker's inference and training share: passage format, model key and folder."""

from __future__ import annotations

import json
from pathlib import Path

from core.settings import Settings
from core.types import Chunk
from retrieval.trained import format_passage, model_dir, model_key, trained_model_dir


def settings_for(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", guides_dir=tmp_path / "guides", embed_model="fake:hash", **kw)


def chunk(path: list[str], text: str, guide: str = "g.md") -> Chunk:
    return Chunk(guide=guide, guide_title="Guide", section_path=path, start=1, end=2, text=text)


def test_format_passage():
    assert format_passage(["RAG", "Chunking"], "text") == "RAG › Chunking\ntext"
    assert format_passage([], "text") == "text"


def test_model_key_tracks_corpus_settings_data_and_seed(tmp_path):
    chunks = [chunk(["A"], "alpha"), chunk(["B"], "beta")]
    data = tmp_path / "train.jsonl"
    data.write_text('{"query": "q"}\n')
    s = settings_for(tmp_path)
    k = model_key(s, chunks, data=data)
    assert len(k) == 16 and set(k) <= set("0123456789abcdef")
    assert k == model_key(settings_for(tmp_path), list(reversed(chunks)), data=data)        # order-free
    assert k != model_key(s, [chunk(["A"], "alpha changed"), chunk(["B"], "beta")], data=data)
    assert k != model_key(settings_for(tmp_path, reranker_seed=14), chunks, data=data)
    assert k != model_key(settings_for(tmp_path, reranker_epochs=2), chunks, data=data)
    assert k != model_key(settings_for(tmp_path, reranker_layers=3), chunks, data=data)
    other = tmp_path / "other.jsonl"
    other.write_text('{"query": "q2"}\n')
    assert model_key(s, chunks, data=[data, other]) not in {k, model_key(s, chunks, data=[other, data])}
    assert k != model_key(s, chunks, tiny=True, data=data)
    assert k == model_key(settings_for(tmp_path, rerank_weight=0.9, rerank_candidates=30), chunks, data=data)
    assert k != model_key(s, chunks, data=tmp_path / "missing.jsonl")
    data.write_text('{"query": "another"}\n')
    k2 = model_key(s, chunks, data=data)
    assert k2 != k                                                                   # regenerated data, new model
    assert model_dir(s, chunks, data=data) == s.data_dir / "models" / f"reranker-{k2}"


def test_data_sources_name_the_committed_files_and_unknown_ones_say_which_exist(tmp_path):
    import pytest

    from retrieval.trained import DATA_SOURCES, data_files

    assert data_files(settings_for(tmp_path, reranker_data_sources="bank, llm")) == [DATA_SOURCES["bank"],
                                                                                     DATA_SOURCES["llm"]]
    with pytest.raises(ValueError, match="bank.*llm.*llm-small"):
        data_files(settings_for(tmp_path, reranker_data_sources="bank,web"))
    with pytest.raises(ValueError, match="none given"):
        data_files(settings_for(tmp_path, reranker_data_sources=" , "))


def test_trained_model_dir_follows_the_current_index(tmp_path):
    s = settings_for(tmp_path)

    def publish(vid: str, chunks: list[Chunk]) -> None:
        root = s.index_dir / "versions" / vid
        root.mkdir(parents=True)
        (root / "meta.json").write_text(json.dumps({"n_chunks": len(chunks)}))
        (root / "chunks.jsonl").write_text("".join(json.dumps(c.to_payload()) + "\n" for c in chunks))
        (s.index_dir / "CURRENT").write_text(json.dumps({"version": vid}))

    one = [chunk(["A"], "alpha"), chunk(["B"], "beta")]
    publish("v1", one)
    first = trained_model_dir(s)
    assert first == model_dir(s, one)
    publish("v2", [chunk(["A"], "alpha, edited"), chunk(["B"], "beta")])
    assert trained_model_dir(s) != first                                          # a re-index makes it stale
