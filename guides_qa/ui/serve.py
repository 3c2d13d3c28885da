"""What `guides serve` becomes: start loading the models, then run Streamlit in this process.

``guides serve`` prepares the data folder, then replaces itself (``os.execve``) with
``python -m guides_qa.ui.serve <streamlit options>``. This module sets up the log, starts the
shared engine's warm-up in a background thread (so the models load while the first person
opens the page), and hands the main thread to Streamlit. One process: SIGTERM or SIGINT reach
Streamlit directly, and the llama.cpp server, which runs inside it (xllamacpp), ends with it.

Example::

    python -m guides_qa.ui.serve --server.port 8501 --server.headless true
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app.py"
# After SIGTERM/SIGINT, the longest Streamlit may take to stop before the process exits anyway
# (a thread in the middle of a generation must not keep the service alive).
STOP_GRACE_SECONDS = 5.0


def _exit_after_grace(log: logging.Logger) -> None:
    """Wrap Streamlit's SIGTERM/SIGINT handlers: let it stop cleanly, but end the process within the grace period."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        prev = signal.getsignal(sig)

        def handler(signum, frame, prev=prev):
            log.info("shutdown: %s received, stopping the app", signal.Signals(signum).name)

            def force() -> None:
                time.sleep(STOP_GRACE_SECONDS)
                log.warning("shutdown: still running %.0f s after the signal; exiting now", STOP_GRACE_SECONDS)
                for h in logging.getLogger("guides_qa").handlers:
                    h.flush()
                os._exit(0)

            threading.Thread(target=force, name="guides-qa-stop", daemon=True).start()
            if callable(prev):
                prev(signum, frame)
            else:
                raise SystemExit(0)

        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from core.settings import load_settings
    from guides_qa.logs import setup_logging
    from guides_qa.ui.engine import shared_engine

    settings = load_settings()
    setup_logging(settings)
    log = logging.getLogger("guides_qa.serve")
    log.info("start-up: pid %d, loading the models in the background", os.getpid())
    engine = shared_engine()
    engine.warm(settings)
    atexit.register(engine.close)          # stop the llama.cpp server and close the index before teardown

    from streamlit.web import bootstrap

    # Streamlit installs its signal handlers in bootstrap.run; wrap them once the server runs.
    orig = getattr(bootstrap, "_set_up_signal_handler", None)
    if orig is None:
        log.warning("this Streamlit version has no bootstrap._set_up_signal_handler: SIGTERM stops the app "
                    "without the %.0f s exit guarantee", STOP_GRACE_SECONDS)
    else:
        def set_up_signal_handler(*a, **kw):
            orig(*a, **kw)
            _exit_after_grace(log)

        bootstrap._set_up_signal_handler = set_up_signal_handler
    from streamlit.web import cli as st_cli

    sys.argv = ["streamlit", "run", str(APP), *(argv if argv is not None else sys.argv[1:])]
    return st_cli.main()


if __name__ == "__main__":
    sys.exit(main())
