"""Fixtures for the answering stage: hand-made hits, the fake LLM, and (slow) the real model and index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.llm import FakeLLM
from core.settings import Settings
from ingest.embed import HashEmbedder
from core.types import Hit

REPO = Path(__file__).resolve().parents[2]


def make_hit(text: str, *, rank: int = 1, section: str = "Sec", guide_title: str = "Guide", chunk_id: str | None = None,
             score: float = 0.03, scores: dict | None = None) -> Hit:
    payload = {"chunk_id": chunk_id or f"c{rank}", "guide": "guide.md", "guide_title": guide_title,
               "section": f"{guide_title} › {section}", "lines": [rank * 10, rank * 10 + 5], "text": text}
    return Hit(payload=payload, score=score, rank=rank, scores=scores if scores is not None else {"hybrid": score})


@pytest.fixture(name="make_hit")
def make_hit_fixture():
    """The ``make_hit(text, rank=..., section=..., chunk_id=..., scores=...)`` helper."""
    return make_hit


@pytest.fixture
def hits() -> list[Hit]:
    """Four passages about different topics, best first."""
    return [
        make_hit("LoRA freezes the pretrained weights and trains two low-rank matrices B and A. "
                 "At inference the update is merged into the weights, so there is no latency overhead.",
                 rank=1, section="LoRA", chunk_id="lora"),
        make_hit("QLoRA applies LoRA to a 4-bit quantized base model. It fine-tunes a 65B model on one 48GB GPU.",
                 rank=2, section="QLoRA", chunk_id="qlora"),
        make_hit("Byte pair encoding counts adjacent symbol pairs and merges the most frequent pair into a new token, "
                 "repeating until the vocabulary reaches its target size.", rank=3, section="BPE", chunk_id="bpe"),
        make_hit("Rotary position embeddings rotate query and key vectors by an angle that depends on the position, "
                 "which encodes relative positions.", rank=4, section="RoPE", chunk_id="rope"),
    ]


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder(dim=256)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(llm="fake", data_dir=tmp_path, guides_dir=tmp_path / "guides")


@pytest.fixture
def open_settings(tmp_path) -> Settings:
    """Settings whose cosine gate lets everything through (the hash embedder's cosines are low)."""
    return Settings(llm="fake", data_dir=tmp_path, guides_dir=tmp_path / "guides", refuse_min_cosine=-1.0)


# --------------------------------------------------------------------------- slow: real model, real index
@pytest.fixture(scope="session")
def answer_real_index(tmp_path_factory):
    """Settings whose data_dir holds a fresh index of data/guides (built once per session)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ingest.pipeline import run_ingest

    data = tmp_path_factory.mktemp("answer_index")
    s = Settings(guides_dir=REPO / "data" / "guides", data_dir=data)
    summary = run_ingest(s, progress=False)
    assert summary.n_chunks > 100, summary.render()
    return s


@pytest.fixture(scope="session")
def answer_pipeline(answer_real_index, answer_bundled_llm):
    """The product's pipeline over the real index, answering with the bundled model."""
    from pipeline.qa import Pipeline

    pipe = Pipeline(answer_real_index, llm=answer_bundled_llm)
    yield pipe
    pipe.close()


@pytest.fixture(scope="session")
def answer_bundled_llm():
    """The bundled model, assembled (or reused) under the repo's data/models, served on loopback."""
    from core.llm import load_llm

    llm = load_llm(Settings(llm="bundled", data_dir=REPO / "data"))
    llm.start()
    yield llm
    llm.close()
