"""Process-wide resources for the chat app: one index handle per index folder, one embedder per
model, one LLM per backend, and a ``Pipeline`` per session options that shares them.

Embedded Qdrant allows one client per folder per process, so every Pipeline must use the same
``IndexHandle``; sessions that change top-k, reranking or the LLM backend get their own
lightweight Pipeline (settings copy) whose heavy parts come from here. A local llama.cpp server
has one slot, so its LLM is wrapped in ``SerialLLM``: one generation at a time, others wait.

Example::

    engine = Engine()                                   # app.py keeps one in st.cache_resource
    pipe = engine.pipeline(settings)                    # the configured pipeline
    fast = engine.pipeline(settings, top_k=5, rerank=False)
    assert fast.index is pipe.index and fast.embedder is pipe.embedder
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cached_property
from typing import Iterator

from guides_qa.config import Settings
from guides_qa.pipeline import Pipeline

# Pipeline variants kept per process (each is a settings copy plus small helpers).
MAX_VARIANTS = 32
LLM_WAIT_SECONDS = 600


class SerialLLM:
    """Wraps a single-slot LLM so that only one generation runs at a time across sessions."""

    def __init__(self, llm, *, wait_seconds: float = LLM_WAIT_SECONDS):
        self.inner = llm
        self.name = llm.name
        self.context_window = llm.context_window
        self.lock = threading.Lock()
        self.wait_seconds = wait_seconds

    def stream(self, messages, *, max_tokens, temperature, stop=None) -> Iterator[str]:
        from answer.llm import LLMError

        if not self.lock.acquire(timeout=self.wait_seconds):
            raise LLMError(f"The local model {self.name!r} was busy with other people's questions for "
                           f"{self.wait_seconds:.0f} s; ask again in a moment.")
        try:
            yield from self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)
        finally:
            self.lock.release()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


def single_slot(backend: str) -> bool:
    """Local llama.cpp servers (bundled, gguf:) run one request at a time."""
    return backend == "bundled" or backend.startswith("gguf:")


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

    def close(self) -> None:          # shared parts are closed by Engine.close()
        pass


class Engine:
    """Loads each heavy component once per process and hands out Pipelines that share them; thread-safe."""

    def __init__(self):
        self._lock = threading.RLock()
        self._load_locks: dict[tuple, threading.Lock] = {}
        self._handles: dict[tuple, object] = {}
        self._embedders: dict[str, object] = {}
        self._llms: dict[tuple, object] = {}
        self._rerankers: dict[tuple, object] = {}
        self._pipes: OrderedDict[str, Pipeline] = OrderedDict()
        self._warmed: set[str] = set()

    def ready(self, settings: Settings) -> bool:
        """True when the embedder for ``settings`` is loaded (the slow part of the first question)."""
        with self._lock:
            return settings.embed_model in self._embedders

    def warm(self, settings: Settings) -> threading.Thread | None:
        """Load the embedder, open the index, load the reranker, start a local LLM and cache the
        reranker's passage encodings in the background, once per settings, so the first question does not pay for it. Errors are left for that question."""
        key = settings.model_dump_json()
        with self._lock:
            if key in self._warmed:
                return None
            self._warmed.add(key)

        def run() -> None:
            steps = (lambda: self.embedder(settings).embed(["warm up"]),
                     lambda: self.index(settings).refresh(),
                     lambda: self.reranker(settings),
                     lambda: getattr(getattr(self.llm(settings), "inner", None), "start", lambda: None)(),
                     lambda: self.pipeline(settings).warm_reranker())
            for step in steps:
                try:
                    step()
                except Exception:  # noqa: BLE001 - the question that needs this part reports it
                    pass

        t = threading.Thread(target=run, name="guides-qa-warm", daemon=True)
        t.start()
        return t

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
    def _once(self, table: dict, key, load):
        """``table[key]``, loading it at most once; loads of different keys run in parallel."""
        with self._lock:
            if key in table:
                return table[key]
            lk = self._load_locks.setdefault((id(table), key), threading.Lock())
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
        return self._once(self._handles, key, lambda: IndexHandle(s))

    def embedder(self, s: Settings):
        from ingest.embed import load_embedder

        return self._once(self._embedders, s.embed_model, lambda: load_embedder(s.embed_model))

    def llm(self, s: Settings):
        from answer.llm import load_llm

        key = (s.llm, s.llm_base_url, s.llm_model, s.llm_api_key_env, s.llm_context_window, s.llm_threads,
               str(s.data_dir.resolve()))

        def load():
            llm = load_llm(s)
            return SerialLLM(llm) if single_slot(s.llm) else llm

        return self._once(self._llms, key, load)

    def reranker(self, s: Settings):
        from retrieval.rerank import load_reranker

        key = (s.reranker, str(s.data_dir.resolve()), s.reranker_max_length)
        return self._once(self._rerankers, key, lambda: load_reranker(s))

    def close(self) -> None:
        with self._lock:
            for h in self._handles.values():
                h.close()
            for llm in self._llms.values():
                if hasattr(llm, "close"):
                    llm.close()
            self._handles.clear()
            self._llms.clear()
            self._pipes.clear()
