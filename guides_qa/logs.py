"""The service log: start-up steps, questions with stage timings, errors with their cause.

``setup_logging`` sends the project's loggers (guides_qa, ingest, retrieval, answer, eval) to
the terminal (stderr) and to ``<data_dir>/logs/serve.log``; calling it again in the same process
(Streamlit re-runs app.py for every page load) changes nothing.

Example::

    path = setup_logging(settings)                     # data/logs/serve.log
    logging.getLogger("guides_qa.app").info("question answered in %.1f s", 3.2)
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

LOGGERS = ("guides_qa", "ingest", "retrieval", "answer", "eval")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_NAME = "serve.log"

_lock = threading.Lock()
_configured: dict[str, Path] = {}


def log_path(settings) -> Path:
    return Path(settings.data_dir) / "logs" / LOG_NAME


def setup_logging(settings, *, level: int = logging.INFO, terminal: bool = True) -> Path:
    """Log to stderr and to <data_dir>/logs/serve.log (appending); once per process and file."""
    path = log_path(settings).resolve()
    with _lock:
        if str(path) in _configured:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
        handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
        if terminal and not _configured:
            handlers.append(logging.StreamHandler(sys.stderr))
        for h in handlers:
            h.setFormatter(fmt)
            h.set_name(f"guides-qa:{path}")
        for name in LOGGERS:
            lg = logging.getLogger(name)
            lg.setLevel(level)
            for h in handlers:
                lg.addHandler(h)
        _configured[str(path)] = path
        return path
