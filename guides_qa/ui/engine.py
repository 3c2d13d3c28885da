"""Process-wide resources for the chat app: one index handle per index folder, one embedder per
model, one LLM per backend, and a ``Pipeline`` per session options that shares them.

Embedded Qdrant allows one client per folder per process, so every Pipeline must use the same
``IndexHandle``; sessions that change top-k, reranking or the LLM backend get their own
lightweight Pipeline (settings copy) whose heavy parts come from here. The answering code is
``pipeline.qa.Pipeline``'s, the same the CLI and ``guides eval`` run.

- Models load one at a time behind one lock (importing transformers from two threads at once
  half-initialises it); ``warm`` loads them in the background once and records each step, its
  time and its error in a ``Warmup`` the page shows.
- A local llama.cpp server runs ``llm_parallel`` requests at once (default 1), so its LLM is wrapped in
  ``QueuedLLM``: that many generations at a time, the others wait in order and can see their place in the
  queue. The wrapper passes
  on every attribute of the model it wraps (prefill, prompt budget, ...), so the prompt is the CLI's.

Example::

    engine = Engine()                                   # app.py keeps one in st.cache_resource
    warmup = engine.warm(settings)                      # background; warmup.wait(), warmup.errors
    pipe = engine.pipeline(settings)                    # the configured pipeline
    fast = engine.pipeline(settings, top_k=5, rerank=False)
    assert fast.index is pipe.index and fast.embedder is pipe.embedder
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator

from core.settings import Settings
from pipeline.qa import Pipeline

log = logging.getLogger("guides_qa.engine")

# Pipeline variants kept per process (each is a settings copy plus small helpers).
MAX_VARIANTS = 32
LLM_WAIT_SECONDS = 600
QUEUE_POLL_SECONDS = 0.5

# --------------------------------------------------------------------------- the local model's queue
_listener = threading.local()


@contextmanager
def queue_listener(callback: Callable[[int, float], None]):
    """While active in this thread, ``callback(ahead, waited_s)`` is called every ~0.5 s while this
    thread's question waits for the local model (``ahead``: questions before it, 0 = next)."""
    prev = getattr(_listener, "callback", None)
    _listener.callback = callback
    try:
        yield
    finally:
        _listener.callback = prev


class QueuedLLM:
    """Wraps a local LLM with ``slots`` slots (settings.llm_parallel): that many generations at a time across
    sessions, the others wait first come, first served. Every other attribute (supports_prefill,
    default_prompt_budget, start, ...) is the wrapped model's, so the answerer builds the same prompt as with
    the bare model."""

    def __init__(self, llm, *, wait_seconds: float = LLM_WAIT_SECONDS, slots: int = 1):
        self.inner = llm
        self.wait_seconds = wait_seconds
        self.slots = max(1, slots)
        self._cond = threading.Condition()
        self._queue: list[object] = []          # tickets; the first one holds the slot

    def __getattr__(self, name: str):
        # Only called for attributes not set on the wrapper itself.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def queued(self) -> int:
        """Questions holding or waiting for a slot."""
        with self._cond:
            return len(self._queue)

    def stream(self, messages, *, max_tokens, temperature, stop=None) -> Iterator[str]:
        from core.llm import LLMError

        ticket = object()
        notify = getattr(_listener, "callback", None)
        t0 = time.monotonic()
        with self._cond:
            self._queue.append(ticket)
        try:
            while True:
                with self._cond:
                    ahead = self._queue.index(ticket) - (self.slots - 1)
                    if ahead <= 0:
                        break
                    waited = time.monotonic() - t0
                    if waited > self.wait_seconds:
                        raise LLMError(f"The local model {self.inner.name!r} was busy with other people's questions "
                                       f"for {self.wait_seconds:.0f} s; ask again in a moment.")
                    self._cond.wait(QUEUE_POLL_SECONDS)
                if notify is not None:            # outside the lock: it draws on the page
                    notify(ahead, time.monotonic() - t0)
            waited = time.monotonic() - t0
            if waited > 0.05:
                log.info("waited %.1f s for the local model %s", waited, self.inner.name)
            yield from self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)
        finally:
            with self._cond:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


def single_slot(backend: str) -> bool:
    """Local llama.cpp servers (bundled, bundled-small, gguf:) run one request at a time; so does the fake that stands
    in for them in tests, so the app's tests take the queued path. Only a remote endpoint runs several."""
    from core.bundled import BUNDLED_MODELS

    return backend in BUNDLED_MODELS or backend.partition(":")[0] in ("fake", "gguf")


# --------------------------------------------------------------------------- warm-up
@dataclass
class Step:
    name: str
    seconds: float = 0.0
    error: str | None = None          # "ExceptionType: message", shown on the page and logged
    skipped: str | None = None


@dataclass
class Warmup:
    """Progress of one background warm-up: the steps done, the one running, errors; thread-safe to read.

    ``ready`` is set once the models are loaded (questions wait for it); ``done`` once the
    background extras (the reranker's passage cache) are finished too.
    """
    started: float = field(default_factory=time.monotonic)
    current: str | None = None
    steps: list[Step] = field(default_factory=list)
    loaded: float | None = None
    finished: float | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def elapsed(self) -> float:
        """Seconds until the models were loaded (so far, while loading)."""
        return (self.loaded or time.monotonic()) - self.started

    @property
    def errors(self) -> list[Step]:
        return [s for s in self.steps if s.error]

    def wait(self, timeout: float | None = None) -> bool:
        """Until the models are loaded; False on timeout."""
        return self.ready.wait(timeout)


class SharedPipeline(Pipeline):
    """A Pipeline whose index handle, embedder, LLM and reranker come from an ``Engine``."""

    def __init__(self, settings: Settings, *, engine: "Engine"):
        super().__init__(settings)
        self._engine = engine

    @property
    def embedder(self):
        return self._engine.embedder(self.settings)

    @cached_property
    def index(self):
        return self._engine.index(self.settings)

    @cached_property
    def llm(self):
        return self._engine.llm(self.settings)

    @cached_property
    def reranker(self):
        return self._engine.reranker(self.settings)

    def ask_stream(self, turns, **kw):
        """Pipeline.ask_stream, counted as a question in flight (background warm-up work gives way to it)."""
        with self._engine.question():
            yield from super().ask_stream(turns, **kw)

    def close(self) -> None:          # shared parts are closed by Engine.close()
        pass


class Engine:
    """Loads each heavy component once per process and hands out Pipelines that share them; thread-safe."""

    def __init__(self):
        self._lock = threading.RLock()
        self._model_lock = threading.RLock()     # one model load at a time: library imports are not thread-safe
        self._load_locks: dict[tuple, threading.Lock] = {}
        self._handles: dict[tuple, object] = {}
        self._embedders: dict[str, object] = {}
        self._llms: dict[tuple, object] = {}
        self._rerankers: dict[tuple, object] = {}
        self._pipes: OrderedDict[str, Pipeline] = OrderedDict()
        self._warmups: dict[str, Warmup] = {}
        self._in_flight = 0
        self._stop = threading.Event()           # set by close(): background warm-up work ends
        self._threads: list[threading.Thread] = []

    @contextmanager
    def question(self):
        """Mark a question in flight while the block runs."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    @property
    def questions_in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def _warm_passages(self, settings: Settings, *, batch: int = 16) -> None:
        """Cache the reranker's passage encodings, a batch at a time, pausing while questions are answered
        (on 2 cores this would otherwise slow the first questions' reranking and generation several-fold)."""
        from retrieval.trained import format_passage

        reranker = self.reranker(settings)
        warm = getattr(reranker, "warm", None)
        if warm is None:
            return
        chunks = self.index(settings).refresh().chunks()
        passages = [format_passage(c.section_path, c.text) for c in chunks]
        for b in range(0, len(passages), batch):
            while self.questions_in_flight and not self._stop.is_set():
                time.sleep(0.2)
            if self._stop.is_set():
                raise InterruptedError("the engine was closed")
            warm(passages[b:b + batch])

    def ready(self, settings: Settings) -> bool:
        """True when the warm-up for ``settings`` has finished (or the embedder is loaded without one)."""
        w = self.warmup(settings)
        if w is not None:
            return w.ready.is_set()
        with self._lock:
            return settings.embed_model in self._embedders

    def warmup(self, settings: Settings) -> Warmup | None:
        """The warm-up started for ``settings``, if any."""
        with self._lock:
            return self._warmups.get(settings.model_dump_json())

    def warm(self, settings: Settings) -> Warmup:
        """Load the embedder, open the index, load the reranker, start a local LLM and cache the
        reranker's passage encodings in a background thread, once per settings, so the first
        question does not pay for it. Each step's time and error are logged and kept in the
        returned ``Warmup``; a question that needs a part that failed tries again and reports it."""
        key = settings.model_dump_json()
        with self._lock:
            w = self._warmups.get(key)
            if w is not None:
                return w
            w = self._warmups[key] = Warmup()

        def has_index() -> str | None:
            from ingest.store import IndexLayout

            if settings.qdrant_url is None and IndexLayout(settings).current_vid() is None:
                return "no index yet"
            return None

        def start_llm() -> None:
            llm = self.llm(settings)
            start = getattr(getattr(llm, "inner", llm), "start", None)
            if start is not None:
                with self._model_lock:
                    start()

        # (name, load, reason to skip or None); questions wait for every step but the last.
        steps = (("embedder", lambda: self.embedder(settings).embed(["warm up"]), None),
                 ("index", lambda: self.index(settings).refresh(), has_index),
                 ("reranker", lambda: self.reranker(settings), None),
                 ("LLM", start_llm, None),
                 # how fast the model reads, so the evidence budget fits the first-token target (answer/budget.py)
                 ("evidence budget", lambda: log.info("evidence budget: %s",
                                                      self.pipeline(settings).answerer.evidence_budget.why), None),
                 ("reranker passage cache", lambda: self._warm_passages(settings), has_index))

        def run_step(name: str, fn, skip_if) -> None:
            step = Step(name)
            w.current = name
            t = time.monotonic()
            try:
                step.skipped = skip_if() if skip_if else None
                if step.skipped is None:
                    fn()
            except InterruptedError as e:         # Engine.close() during the warm-up
                step.skipped = str(e)
            except Exception as e:  # noqa: BLE001 - kept in the Warmup, shown on the page, logged
                step.error = f"{type(e).__name__}: {e}"
                log.error("warm-up: %s failed after %.1f s: %s", name, time.monotonic() - t, step.error, exc_info=e)
            step.seconds = time.monotonic() - t
            if step.skipped:
                log.info("warm-up: %s skipped (%s)", name, step.skipped)
            elif not step.error:
                log.info("warm-up: %s ready in %.1f s", name, step.seconds)
            w.steps.append(step)

        def run() -> None:
            try:
                log.info("warm-up: loading embedder %s, reranker %s, LLM %s", settings.embed_model,
                         settings.reranker, settings.llm)
                for name, fn, skip_if in steps[:-1]:
                    run_step(name, fn, skip_if)
                w.loaded = time.monotonic()
                log.info("start-up: models loaded in %.1f s%s; questions are answered from now on", w.elapsed,
                         f" ({len(w.errors)} failed)" if w.errors else "")
                w.ready.set()
                run_step(*steps[-1])
                w.finished = time.monotonic()
                log.info("warm-up: done in %.1f s", w.finished - w.started)
            finally:                       # never leave a question waiting for a warm-up that died
                w.current = None
                w.loaded = w.loaded or time.monotonic()
                w.ready.set()
                w.done.set()

        t = threading.Thread(target=run, name="guides-qa-warm", daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()
        return w

    # -- session options -> settings -----------------------------------------
    @staticmethod
    def session_settings(settings: Settings, *, top_k: int | None = None, rerank: bool | None = None,
                         llm: str | None = None) -> Settings:
        """``settings`` with one session's overrides; rerank=False turns the reranker off."""
        update: dict = {}
        if top_k is not None and top_k != settings.top_k:
            if not 1 <= int(top_k) <= 100:
                raise ValueError(f"top_k must be between 1 and 100, got {top_k}")
            update["top_k"] = int(top_k)
        if rerank is False and settings.reranker != "off":
            update["reranker"] = "off"
        if llm is not None and llm != settings.llm:
            update["llm"] = llm
        return settings.model_copy(update=update) if update else settings

    def pipeline(self, settings: Settings, **options) -> Pipeline:
        """The Pipeline for ``settings`` plus session ``options`` (top_k, rerank, llm), built once."""
        s = self.session_settings(settings, **options)
        key = s.model_dump_json()
        with self._lock:
            p = self._pipes.get(key)
            if p is None:
                p = SharedPipeline(s, engine=self)
                self._pipes[key] = p
                while len(self._pipes) > MAX_VARIANTS:
                    self._pipes.popitem(last=False)
            self._pipes.move_to_end(key)
            return p

    # -- shared components ----------------------------------------------------
    def _once(self, table: dict, key, load, *, model: bool = True):
        """``table[key]``, loading it at most once. Model loads run one at a time (importing
        transformers on two threads at once breaks it); other loads (index handles) in parallel."""
        with self._lock:
            if key in table:
                return table[key]
            lk = self._model_lock if model else self._load_locks.setdefault((id(table), key), threading.Lock())
        with lk:
            with self._lock:
                if key in table:
                    return table[key]
            value = load()
            with self._lock:
                table[key] = value
            return value

    def index(self, s: Settings):
        from retrieval.search import IndexHandle

        key = (str(s.index_dir.resolve()), s.qdrant_url, s.collection_prefix)
        return self._once(self._handles, key, lambda: IndexHandle(s), model=False)

    def embedder(self, s: Settings):
        from ingest.embed import load_embedder

        return self._once(self._embedders, s.embed_model, lambda: load_embedder(s.embed_model))

    def llm(self, s: Settings):
        from core.llm import load_llm

        key = (s.llm, s.llm_base_url, s.llm_model, s.llm_api_key_env, s.llm_context_window, s.llm_threads,
               s.llm_parallel, str(s.data_dir.resolve()))

        def load():
            llm = load_llm(s)
            return QueuedLLM(llm, slots=getattr(llm, "slots", 1)) if single_slot(s.llm) else llm

        return self._once(self._llms, key, load)

    def reranker(self, s: Settings):
        from retrieval.rerank import load_reranker

        key = (s.reranker, str(s.data_dir.resolve()), s.reranker_max_length)
        return self._once(self._rerankers, key, lambda: load_reranker(s))

    def close(self, *, timeout: float = 30.0) -> None:
        """Stop the background warm-up, close index handles and stop local LLM servers (all load again on
        next use). A warm-up thread left computing at interpreter exit aborts the process (torch's threads)."""
        self._stop.set()
        with self._lock:
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(timeout)
        self._stop.clear()
        with self._lock:
            self._warmups.clear()
            for h in self._handles.values():
                h.close()
            for llm in self._llms.values():
                if hasattr(llm, "close"):
                    llm.close()
            self._handles.clear()
            self._llms.clear()
            self._pipes.clear()


_shared: Engine | None = None
_shared_lock = threading.Lock()


def shared_engine() -> Engine:
    """The process's one Engine: `guides serve` warms it before Streamlit starts, app.py uses it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Engine()
        return _shared
