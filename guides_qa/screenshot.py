"""The README's screenshot of an answer, retaken by one command.

Starts the app (``streamlit run app.py``) with your settings and index, asks one question in headless
Debian chromium, waits for the answer to finish (its latency line and feedback buttons), and saves the answer's chat
message as a PNG. ``--url`` uses an app that is already running instead.

Usage::

    make browser                                   # once: Debian's chromium and chromium-driver
    python -m guides_qa.screenshot                 # docs/answer.png, with the bundled model
    python -m guides_qa.screenshot --question "What is LoRA?" --out /tmp/lora.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "answer.png"
QUESTION = "How many total and active parameters does Mixtral 8x7B have?"

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
NO_CHROMIUM = ("chromium is not installed; install it with `apt-get update && apt-get install -y chromium "
               "chromium-driver` (or `make browser`)")


def chromium_driver(profile: Path, *, window: str = "1280,1700", page_load_timeout: float = 60):
    """A headless Debian chromium driven by selenium, with its own profile folder."""
    if CHROMIUM is None:
        raise RuntimeError(NO_CHROMIUM)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--window-size={window}")
    opts.add_argument(f"--user-data-dir={profile}")
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(page_load_timeout)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}) before it served; its log:\n"
                               + log.read_text(errors="replace")[-2000:])
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app did not answer at {url} within 120 s; its log: {log}")


def take(url: str, question: str, out: Path, *, timeout: float = 300) -> Path:
    """Ask ``question`` in the app at ``url``; save the finished answer's chat message to ``out``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as profile:
        d = chromium_driver(Path(profile), window="1100,2400")
        try:
            wait = WebDriverWait(d, timeout)
            d.get(url)
            box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, '[data-testid="stChatInputTextArea"]')))
            box.send_keys(question)
            box.send_keys(Keys.ENTER)
            msg = '(//*[@data-testid="stChatMessage"])[2]'
            # finished: the latency line and the feedback buttons are drawn (a "total" in the answer is not enough)
            wait.until(EC.visibility_of_element_located(
                (By.XPATH, msg + '//button[contains(normalize-space(.), "Comment")]')))
            wait.until(lambda drv: ":material/timer:" in drv.page_source or "first token" in drv.find_element(
                By.XPATH, msg).text)
            time.sleep(1.5)                                   # let the evidence block finish its layout
            el = d.find_element(By.XPATH, msg)
            d.execute_script("arguments[0].scrollIntoView({block: 'start'});", el)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".partial.png")
            el.screenshot(str(tmp))
            os.replace(tmp, out)                              # never a half-written screenshot
            return out
        finally:
            d.quit()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guides_qa.screenshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default: {OUT.relative_to(REPO)})")
    ap.add_argument("--url", help="an app already running (default: start one with your settings)")
    args = ap.parse_args(argv)
    if CHROMIUM is None:
        print(f"error: {NO_CHROMIUM}", file=sys.stderr)
        return 2
    proc = None
    try:
        if args.url:
            url = args.url
        else:
            log = Path(tempfile.mkstemp(prefix="guides-screenshot-", suffix=".log")[1])
            print(f"Starting the app (log: {log}) …", flush=True)
            proc, url = _serve(log)
        print(f"Asking: {args.question}", flush=True)
        path = take(url, args.question, args.out)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"Saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
