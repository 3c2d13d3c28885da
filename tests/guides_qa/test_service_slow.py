"""The app as a service with the real default models (MiniLM embedder, no reranker: the measured default, bundled 1.5B LLM).

- AppTest: load the page and ask at once; a cited answer, no exception (the first question once
  crashed importing transformers while the warm-up thread imported it too).
- `guides serve` in a subprocess: SIGTERM stops it and everything it started within 15 s.
- Needs the `index` branch (qdrant-edge shards several processes open, reader leases):
  `guides ask --retrieve-only` while `guides serve` runs on the same data folder, and two
  `guides ingest` runs while the app answers.

The index is built once per module from the real guides; the model file comes from
<repo>/data/models (assembled there as `make run` does), linked into each private data folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
REAL_GUIDES = REPO / "data" / "guides"
QUESTION = "Why do transformers need positional encodings?"

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- helpers
def clean_env(**env: str) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("GUIDES_", "QDRANT_"))}
    out.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), **env)
    return out


def session_pids(sid: int) -> list[int]:
    """Live processes in session ``sid`` (everything `guides serve` started, since it leads a new session)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, s, stat in (line.split()[:3] for line in out.splitlines() if line.strip())
            if int(s) == sid and not stat.startswith("Z")]


def wait_for_log(path: Path, text: str, proc: subprocess.Popen, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        if proc.poll() is not None:
            pytest.fail(f"`guides serve` exited with {proc.returncode} before {text!r}:\n{log[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"{text!r} not in {path} within {timeout} s")


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, real_embedder) -> Path:
    """The real guides indexed with the real embedder, default settings; never opened by an app."""
    from core.bundled import assemble_bundled_model
    from core.settings import Settings
    from ingest.pipeline import run_ingest

    assemble_bundled_model(REPO / "data")                # what `make run` prepares; reused when verified
    data = tmp_path_factory.mktemp("service") / "data"
    run_ingest(Settings(guides_dir=REAL_GUIDES, data_dir=data), embedder=real_embedder, progress=False)
    return data


@pytest.fixture
def default_data(built_index, tmp_path) -> Path:
    """A private data folder: a copy of the index, the model files linked from <repo>/data/models."""
    data = tmp_path / "data"
    shutil.copytree(built_index / "index", data / "index")
    (data / "models").symlink_to(REPO / "data" / "models", target_is_directory=True)
    return data


@pytest.fixture
def serve(default_data, tmp_path, free_port):
    """Start `guides serve --no-prepare` with the default models in a new session; yields (proc, data, url)."""
    procs = []

    def start(**env: str):
        port = free_port()
        out = open(tmp_path / f"serve-{port}.out", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "guides_qa.cli", "serve", "--no-prepare", "--port", str(port),
                                 "--data-dir", str(default_data), "--guides-dir", str(REAL_GUIDES)],
                                cwd=REPO, env=clean_env(**env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc, default_data, f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# --------------------------------------------------------------------------- tests
def test_apptest_with_the_real_default_models_load_and_ask_at_once(default_data, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from guides_qa.ui.engine import shared_engine

    for k in [k for k in os.environ if k.startswith(("GUIDES_", "QDRANT_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GUIDES_DATA_DIR", str(default_data))
    monkeypatch.setenv("GUIDES_GUIDES_DIR", str(REAL_GUIDES))
    try:
        at = AppTest.from_file(str(APP), default_timeout=900).run()
        assert not at.exception
        t = time.monotonic()
        at.chat_input[0].set_value(QUESTION).run()           # at once: the warm-up is still loading
        assert not at.exception, at.exception
        turn = at.session_state["history"][-1]
        assert turn.ok, f"{turn.error.title}: {turn.error.detail}"
        assert not turn.refused, turn.answer
        assert turn.citations and any(c.verified for c in turn.citations), turn.answer
        msg = [m for m in at.chat_message if m.name == "assistant"][-1]
        assert ":blue-badge[" in msg.markdown[0].value and not msg.error
        assert turn.settings["llm"] == "bundled" and turn.settings["reranker"] == "off"
        print(f"\nload + first answer: {time.monotonic() - t:.1f} s; timings {turn.timings}")
    finally:
        shared_engine().close()                              # stop the llama.cpp server, release the index


def test_sigterm_stops_guides_serve_and_everything_it_started(serve):
    proc, data, url = serve()
    wait_for_log(data / "logs" / "serve.log", "models loaded in", proc)   # llama.cpp server running in-process
    assert proc.pid in session_pids(proc.pid)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    while session_pids(proc.pid) and time.monotonic() - t < 15:
        time.sleep(0.2)
    left = session_pids(proc.pid)
    stopped = time.monotonic() - t
    assert not left, f"still running 15 s after SIGTERM: {left}"
    assert proc.wait(5) is not None
    log = (data / "logs" / "serve.log").read_text()
    assert "shutdown: SIGTERM received" in log
    print(f"\nstopped {stopped:.1f} s after SIGTERM")


def test_sigint_stops_guides_serve_too(serve):
    proc, data, url = serve(GUIDES_LLM="fake", GUIDES_RERANKER="off")
    wait_for_log(data / "logs" / "serve.log", "models loaded in", proc)
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    while session_pids(proc.pid) and time.monotonic() - t < 15:
        time.sleep(0.2)
    assert not session_pids(proc.pid)


# ----------------------------------------------- these need the `index` branch (several processes per version)
def test_cli_retrieve_only_while_the_app_serves(serve):
    """Needs the `index` branch: the embedded engine there opens a published version from several processes."""
    proc, data, url = serve(GUIDES_LLM="fake")
    wait_for_log(data / "logs" / "serve.log", "models loaded in", proc)    # the app has the index open
    r = subprocess.run([sys.executable, "-m", "guides_qa.cli", "ask", "--retrieve-only", "--json",
                        "--data-dir", str(data), "--guides-dir", str(REAL_GUIDES),
                        "What is LoRA and why is it preferred over full fine-tuning?"],
                       cwd=REPO, env=clean_env(GUIDES_LLM="fake"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert len(res["contexts"]) == 10 and any("LoRA" in c["section"] for c in res["contexts"][:3])
    assert proc.poll() is None                                             # the app still serves


def test_two_ingests_while_the_app_answers(small_index, tmp_path, monkeypatch):
    """The app (AppTest, this process) keeps answering while `guides ingest` publishes twice in other
    processes; then it answers from the newest version. Needs the `index` branch's reader leases for
    "no pruned version while open" under the qdrant-edge engine."""
    from streamlit.testing.v1 import AppTest

    from ingest.store import IndexLayout
    from core.settings import Settings
    from guides_qa.ui.engine import shared_engine

    guides, data = small_index
    my_guides, my_data = tmp_path / "guides", tmp_path / "data"
    shutil.copytree(guides, my_guides)
    shutil.copytree(data, my_data)
    env = {"GUIDES_GUIDES_DIR": str(my_guides), "GUIDES_DATA_DIR": str(my_data), "GUIDES_EMBED_MODEL": "fake:hash",
           "GUIDES_LLM": "fake", "GUIDES_RERANKER": "fake:overlap"}
    for k in [k for k in os.environ if k.startswith(("GUIDES_", "QDRANT_"))]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    layout = IndexLayout(Settings(guides_dir=my_guides, data_dir=my_data))
    first = layout.current_vid()

    at = AppTest.from_file(str(APP), default_timeout=300).run()
    errors: list[str] = []

    def ingest(name: str, body: str) -> None:
        (my_guides / name).write_text(body, encoding="utf-8")
        r = subprocess.run([sys.executable, "-m", "guides_qa.cli", "ingest", "--quiet"], cwd=REPO,
                           env=clean_env(**env), capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            errors.append(f"ingest {name}: {r.stderr[-1500:]}")

    def both() -> None:
        ingest("zorblax.md", "# Zorblax Guide\n\n## Zorblax tokenizer\n\nThe zorblax tokenizer splits words into "
                             "quarks. Each quark is embedded separately by the zorblax encoder.\n")
        ingest("quibble.md", "# Quibble Guide\n\n## Quibble attention\n\nQuibble attention looks at every third "
                             "token and skips the rest to save memory.\n")

    worker = threading.Thread(target=both)
    worker.start()
    asked = 0
    try:
        while worker.is_alive() or asked < 2:
            at.chat_input[0].set_value(("What is LoRA?", "What is the KV cache?")[asked % 2]).run()
            asked += 1
            assert not at.exception, at.exception
            time.sleep(1.0)
        worker.join()
        assert not errors, errors[0]
        failed = [t for t in at.session_state["history"] if not t.ok]
        assert not failed, f"{failed[0].error.title}: {failed[0].error.detail}"
        assert layout.current_vid() != first
        at.chat_input[0].set_value("How does quibble attention save memory?").run()
        turn = at.session_state["history"][-1]
        assert turn.ok and any(r.guide == "quibble.md" for r in turn.sources), [r.guide for r in turn.sources]
        print(f"\n{asked} questions answered during two ingests")
    finally:
        shared_engine().close()


# --------------------------------------------------------------------------- three people at once, real browser
QUESTIONS = ("Why do transformers need positional encodings?",
             "What is LoRA and why is it preferred over full fine-tuning?",
             "What is the KV cache and why does it speed up decoding?")


@pytest.fixture
def browsers(make_browser):
    """Three separate headless chromium instances: three Streamlit sessions."""
    return [make_browser(window="1280,1400", page_load_timeout=120) for _ in range(3)]


def test_three_browser_sessions_ask_at_once_right_after_start_up(serve, browsers, wait_health):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.monotonic()
    proc, data, url = serve()
    wait_health(url, proc)
    boxes = []
    for d in browsers:
        d.get(url)
        boxes.append(WebDriverWait(d, 300).until(
            EC.element_to_be_clickable((By.CSS_SELECTOR, '[data-testid="stChatInputTextArea"]'))))
    asked = {}
    for i, box in enumerate(boxes):               # as close to "at the same moment" as one driver thread allows
        box.send_keys(QUESTIONS[i])
    for i, box in enumerate(boxes):
        box.send_keys(Keys.ENTER)
        asked[i] = time.monotonic()
    done: dict[int, float] = {}
    seen: dict[int, set[str]] = {i: set() for i in range(3)}
    deadline = time.monotonic() + 900
    while len(done) < 3 and time.monotonic() < deadline:
        for i, d in enumerate(browsers):
            if i in done:
                continue
            msgs = d.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')
            text = msgs[-1].text if len(msgs) >= 2 else ""
            for marker in ("Loading the models", "Queued for the local model", "next for the local model"):
                if marker in text:
                    seen[i].add(marker)
            if "total" in text:
                done[i] = time.monotonic()
        time.sleep(0.25)
    log = (data / "logs" / "serve.log").read_text()
    waits = [line.split("waited ")[1].split(" s")[0] for line in log.splitlines() if "for the local model" in line]
    if done:
        print(f"\nstart-up to first answer: {min(done.values()) - t0:.1f} s (`guides serve` start to the first "
              f"complete answer)")
    for i in sorted(done):
        print(f"session {i}: asked {asked[i] - t0:.1f} s after start, answered after {done[i] - asked[i]:.1f} s; "
              f"saw {sorted(seen[i])}")
    print(f"queue waits in the log (s): {waits}")
    print("\n".join(line for line in log.splitlines() if "start-up" in line or "question [" in line))
    assert len(done) == 3, f"only {len(done)} of 3 sessions got an answer within 900 s"
    for i, d in enumerate(browsers):
        msgs = d.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')
        assert len(msgs) == 2, f"session {i} shows {len(msgs)} messages"
        page = d.find_element(By.CSS_SELECTOR, '[data-testid="stMainBlockContainer"]').text
        assert QUESTIONS[i] in msgs[0].text
        assert all(q not in page for j, q in enumerate(QUESTIONS) if j != i), f"session {i} shows another's question"
        cites = [b for b in msgs[1].find_elements(By.XPATH, './/*[@data-testid="stPopover"]//button')
                 if re.search(r"\[\d+\] .* lines? \d+", b.text)]
        assert cites, f"session {i}: no cited passage in {msgs[1].text[:500]!r}"
        assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert len(waits) >= 2, "the local model served the three questions without a queue?"
    assert any(seen.values()), "no session showed that it waited (for the models or the local model)"


def test_guides_api_answers_with_the_bundled_model_and_stops_on_sigterm(default_data, tmp_path, free_port):
    """`guides api` with the default models: the real `openai` client streams a cited answer; SIGTERM stops the
    API and the llama.cpp server inside it."""
    import httpx
    from openai import OpenAI

    port = free_port()
    out = open(tmp_path / "api.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "guides_qa.cli", "api", "--no-prepare", "--port", str(port),
                             "--data-dir", str(default_data), "--guides-dir", str(REAL_GUIDES)],
                            cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        t = time.monotonic()
        while time.monotonic() - t < 300:
            try:
                if httpx.get(url + "/health", timeout=5).json().get("status") == "ready":
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "api.out").read_text()
            time.sleep(1)
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        chunks = list(client.chat.completions.create(
            model="guides-qa", stream=True, messages=[{"role": "user", "content": "What does the KV cache store?"}]))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        extra = chunks[-1].model_extra["guides_qa"]
        assert text.strip() and not extra["refused"] and extra["citations"], (text, extra)
        assert all({"guide", "section", "lines", "quote"} <= set(e) for e in extra["evidence"])
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while session_pids(proc.pid) and time.monotonic() - t < 15:
            time.sleep(0.2)
        assert not session_pids(proc.pid), "the API or its model server outlived SIGTERM by 15 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
