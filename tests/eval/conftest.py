"""Fixtures for the eval tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def eval_cli_env(guides_copy, fake_settings, monkeypatch):
    """A hash-embedder index of the guides, and the environment that points `guides eval` at it; returns its settings."""
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest

    s = fake_settings(guides_copy, reranker="off")
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    for k, v in {"GUIDES_EMBED_MODEL": "fake:hash", "GUIDES_DATA_DIR": str(s.data_dir),
                 "GUIDES_GUIDES_DIR": str(guides_copy), "GUIDES_RERANKER": "off"}.items():
        monkeypatch.setenv(k, v)
    return s


@pytest.fixture
def failing_nli_judge():
    """The fake judge, except that every NLI-verdict call fails as an endpoint error would."""
    from eval.judge import FakeJudge

    class FailingNLI(FakeJudge):
        def generate(self, prompt, response_model):
            if response_model.__name__.startswith("NLI"):
                raise RuntimeError("judge endpoint said 500")
            return super().generate(prompt, response_model)

    return FailingNLI()
