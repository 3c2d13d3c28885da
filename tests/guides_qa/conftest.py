"""Fixtures for the chat app: a small index built once with the hash embedder, copied per test,
and the environment that points app.py at it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
REAL_GUIDES = REPO / "data" / "guides"
SMALL_GUIDES = ("transformers-llm-interview-questions.md", "100-llm-interview-questions.md")


def build_index(guides_dir: Path, data_dir: Path, **kw):
    """run_ingest with the hash embedder (fast, deterministic)."""
    from core.settings import Settings
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest

    s = Settings(guides_dir=guides_dir, data_dir=data_dir, embed_model="fake:hash", reranker="off", llm="fake", **kw)
    return run_ingest(s, embedder=HashEmbedder(), progress=False)


@pytest.fixture(scope="session")
def small_index(tmp_path_factory) -> tuple[Path, Path]:
    """Two real guides indexed once per test session: (guides_dir, data_dir). Never opened by an app."""
    root = tmp_path_factory.mktemp("app-index")
    guides = root / "guides"
    guides.mkdir()
    for name in SMALL_GUIDES:
        shutil.copy(REAL_GUIDES / name, guides / name)
    summary = build_index(guides, root / "data")
    assert summary.n_chunks > 50
    return guides, root / "data"


def _set_env(monkeypatch, guides: Path, data: Path, **extra: str) -> None:
    for k in ("GUIDES_TOP_K", "GUIDES_LLM_BASE_URL", "GUIDES_LLM_MODEL", "QDRANT_URL", "GUIDES_QDRANT_URL"):
        monkeypatch.delenv(k, raising=False)
    env = {"GUIDES_GUIDES_DIR": str(guides), "GUIDES_DATA_DIR": str(data), "GUIDES_EMBED_MODEL": "fake:hash",
           "GUIDES_LLM": "fake", "GUIDES_RERANKER": "fake:overlap", **extra}
    for k, v in env.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def app_env(small_index, tmp_path, monkeypatch):
    """A private copy of the small index (embedded Qdrant allows one client per folder) and the env for it.

    Returns a function taking extra GUIDES_* variables; it returns the data folder.
    """
    guides, data = small_index
    mine = tmp_path / "data"
    shutil.copytree(data, mine)

    def configure(**extra: str) -> Path:
        _set_env(monkeypatch, guides, mine, **extra)
        return mine

    configure()
    return configure


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    """A guides folder with one real guide and no index yet: (guides_dir, data_dir)."""
    guides = tmp_path / "guides"
    guides.mkdir()
    shutil.copy(REAL_GUIDES / SMALL_GUIDES[0], guides / SMALL_GUIDES[0])
    data = tmp_path / "data"
    _set_env(monkeypatch, guides, data)
    return guides, data


@pytest.fixture
def new_app():
    """A fresh AppTest session of app.py (each one is a separate browser session)."""
    from streamlit.testing.v1 import AppTest

    def make():
        return AppTest.from_file(str(APP), default_timeout=60)

    return make


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_health(url: str, proc: subprocess.Popen, log: Path | None = None, timeout: float = 300) -> None:
    """Wait until the Streamlit server at ``url`` answers /_stcore/health; fail with its log if it exits."""
    tail = (lambda: "\n" + log.read_text()[-3000:]) if log is not None else (lambda: "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}:{tail()}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the app did not answer /_stcore/health within {timeout} s:{tail()}")


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free TCP port on 127.0.0.1."""
    return _free_port


@pytest.fixture(scope="session")
def wait_health():
    """``wait_health(url, proc, log=None, timeout=300)``: block until the served app is healthy."""
    return _wait_health
