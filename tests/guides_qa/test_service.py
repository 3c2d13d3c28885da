"""The app as a service, fast: the local model's queue, the warm-up, one answering path for app and CLI, the log."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

from core.settings import Settings
from guides_qa.ui import view
from guides_qa.ui.engine import Engine, QueuedLLM, queue_listener

QUESTION = "What is LoRA and why is it preferred over full fine-tuning?"


class GatedLLM:
    """Streams 'a b c' for each call, but the first call holds the slot until ``release`` is set."""
    name = "gated"
    context_window = 512
    supports_prefill = True
    default_prompt_budget = 123

    def __init__(self, fail_on: str | None = None):
        self.release = threading.Event()
        self.order: list[str] = []
        self.active = 0
        self.max_active = 0
        self.fail_on = fail_on

    def stream(self, messages, *, max_tokens, temperature, stop=None):
        who = messages[-1]["content"]
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            self.order.append(who)
            if who == "first":
                assert self.release.wait(10)
            if who == self.fail_on:
                raise RuntimeError(f"model crashed on {who!r}")
            for w in ("a", " b", " c"):
                yield w
        finally:
            self.active -= 1

    def count_tokens(self, text):
        return len(text.split())


def _msgs(who: str) -> list[dict]:
    return [{"role": "user", "content": who}]


# --------------------------------------------------------------------------- the queue
def test_queued_llm_passes_on_every_attribute_the_answerer_reads():
    inner = GatedLLM()
    inner.custom = "x"
    q = QueuedLLM(inner)
    assert q.supports_prefill is True and q.default_prompt_budget == 123 and q.custom == "x"
    assert q.name == "gated" and q.context_window == 512 and q.count_tokens("a b") == 2
    with pytest.raises(AttributeError):
        q.no_such_attribute


def test_queue_is_first_come_first_served_and_reports_positions():
    inner = GatedLLM()
    q = QueuedLLM(inner)
    seen: dict[str, list[int]] = {"second": [], "third": []}
    outs: dict[str, str] = {}

    def ask(who: str) -> None:
        with queue_listener(lambda ahead, waited: seen[who].append(ahead)):
            outs[who] = "".join(q.stream(_msgs(who), max_tokens=8, temperature=0.0))

    first = threading.Thread(target=lambda: outs.setdefault("first", "".join(q.stream(_msgs("first"), max_tokens=8,
                                                                                         temperature=0.0))))
    first.start()
    while q.queued < 1:
        time.sleep(0.01)
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    while q.queued < 2:
        time.sleep(0.01)
    third = threading.Thread(target=ask, args=("third",))
    third.start()
    while not (seen["second"] and seen["third"]):
        time.sleep(0.05)
    inner.release.set()
    for t in (first, second, third):
        t.join(10)
    assert outs == {"first": "a b c", "second": "a b c", "third": "a b c"}
    assert inner.order == ["first", "second", "third"] and inner.max_active == 1
    assert seen["second"][0] == 1 and seen["third"][0] == 2          # one, then two questions ahead
    assert min(seen["third"]) >= 1 and q.queued == 0


def test_a_server_with_two_slots_runs_two_questions_at_once_and_queues_the_third():
    inner = GatedLLM()
    q = QueuedLLM(inner, slots=2)
    seen: list[int] = []
    outs: dict[str, str] = {}

    def ask(who: str, listen: bool = False) -> None:
        with queue_listener(lambda ahead, waited: seen.append(ahead)) if listen else contextlib.nullcontext():
            outs[who] = "".join(q.stream(_msgs(who), max_tokens=8, temperature=0.0))

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    while q.queued < 1:
        time.sleep(0.01)
    second = threading.Thread(target=ask, args=("second",))       # the free slot: runs while "first" holds one
    second.start()
    second.join(10)
    assert outs.get("second") == "a b c" and "first" not in outs
    blocker = threading.Thread(target=ask, args=("first",))         # a second "first" holds the other slot
    blocker.start()
    while q.queued < 2:
        time.sleep(0.01)
    third = threading.Thread(target=ask, args=("third", True))
    third.start()
    while not seen:
        time.sleep(0.02)
    assert seen[0] == 1 and "third" not in outs                      # both slots busy: one question ahead
    inner.release.set()
    for t in (first, blocker, third):
        t.join(10)
    assert outs["third"] == "a b c" and inner.max_active == 2 and q.queued == 0


def test_one_sessions_error_does_not_reach_the_others():
    inner = GatedLLM(fail_on="second")
    q = QueuedLLM(inner)
    results: dict[str, str] = {}

    def ask(who: str) -> None:
        try:
            results[who] = "".join(q.stream(_msgs(who), max_tokens=8, temperature=0.0))
        except RuntimeError as e:
            results[who] = f"error: {e}"

    threads = [threading.Thread(target=ask, args=(w,)) for w in ("first", "second", "third")]
    threads[0].start()
    while q.queued < 1:
        time.sleep(0.01)
    for t in threads[1:]:
        t.start()
        while q.queued < threads.index(t) + 1:
            time.sleep(0.01)
    inner.release.set()
    for t in threads:
        t.join(10)
    assert results == {"first": "a b c", "second": "error: model crashed on 'second'", "third": "a b c"}
    assert q.queued == 0


def test_queue_wait_gives_up_with_a_message_and_leaves_the_queue():
    from core.llm import LLMError

    inner = GatedLLM()
    q = QueuedLLM(inner, wait_seconds=0.3)
    gen = q.stream(_msgs("first"), max_tokens=8, temperature=0.0)
    t = threading.Thread(target=lambda: next(gen))
    t.start()
    while q.queued < 1:
        time.sleep(0.01)
    with pytest.raises(LLMError, match="busy with other people's questions"):
        "".join(q.stream(_msgs("second"), max_tokens=8, temperature=0.0))
    assert q.queued == 1
    inner.release.set()
    t.join(5)
    gen.close()
    assert q.queued == 0


def test_queue_messages():
    assert view.queue_message(0, 1.0) == "Your question is next for the local model…"
    msg = view.queue_message(2, 12.4)
    assert "position 3" in msg and "2 questions ahead" in msg and "12 s so far" in msg
    assert view.loading_message("reranker", 12.2) == "Loading the models (reranker), 12 s so far…"


# --------------------------------------------------------------------------- warm-up
def test_models_load_one_at_a_time(monkeypatch, tmp_path):
    """Two threads loading the embedder and the reranker at once: the loads never overlap (transformers'
    lazy import broke when they did), and each model is loaded once."""
    import ingest.embed
    import retrieval.rerank

    active, peak, calls = [0], [0], []
    lock = threading.Lock()

    def slow(kind):
        def load(*a, **kw):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                calls.append(kind)
            time.sleep(0.2)
            with lock:
                active[0] -= 1
            return object()
        return load

    monkeypatch.setattr(ingest.embed, "load_embedder", slow("embedder"))
    monkeypatch.setattr(retrieval.rerank, "load_reranker", slow("reranker"))
    s = Settings(guides_dir=tmp_path, data_dir=tmp_path / "data", llm="fake")
    eng = Engine()
    threads = [threading.Thread(target=f, args=(s,)) for f in (eng.embedder, eng.reranker) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1 and sorted(calls) == ["embedder", "reranker"]


def test_warmup_records_and_logs_errors_and_questions_can_wait_for_it(tmp_path, caplog):
    s = Settings(guides_dir=tmp_path, data_dir=tmp_path / "data", embed_model="fake:hash", llm="fake",
                 reranker="no-such-reranker")
    eng = Engine()
    with caplog.at_level("INFO", logger="guides_qa"):
        w = eng.warm(s)
        assert eng.warm(s) is w                       # once per settings
        assert w.wait(30) and w.done.wait(30)
    assert eng.ready(s)
    by_name = {st.name: st for st in w.steps}
    assert by_name["embedder"].error is None and by_name["index"].skipped == "no index yet"
    assert "RerankerError" in by_name["reranker"].error and "no-such-reranker" in by_name["reranker"].error
    assert [st.name for st in w.errors] == ["reranker"]
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged and "reranker failed" in logged[0].getMessage() and logged[0].exc_info
    assert any("models loaded in" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- one path for app and CLI
@pytest.fixture(params=["fake", "fake-like-llama.cpp"])
def fake_kind(request, monkeypatch):
    """GUIDES_LLM=fake as it is, and a fake that continues a prefilled answer and has a small prompt
    budget like the bundled llama.cpp backend (the settings the app once dropped)."""
    if request.param == "fake-like-llama.cpp":
        import core.llm

        real = core.llm.load_llm

        def load_llm(settings):
            llm = real(settings)
            llm.supports_prefill = True
            llm.default_prompt_budget = 260
            return llm

        monkeypatch.setattr(core.llm, "load_llm", load_llm)
    return request.param


@pytest.mark.parametrize("question", [QUESTION, "What is the KV cache and why does it speed up decoding?"])
def test_app_answers_exactly_as_the_cli(app_env, new_app, fake_kind, question, capsys):
    from guides_qa import cli

    app_env()
    assert cli.main(["ask", "--json", question]) == 0          # first: the CLI closes the index when done
    want = json.loads(capsys.readouterr().out)
    assert want["evidence_budget"]["rule"] == "fixed"          # the fakes have no reading speed to measure

    at = new_app().run()
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    turn = at.session_state["history"][-1]
    assert turn.ok, turn.error
    assert turn.answer == want["answer"]
    assert [c.chunk_id for c in turn.citations] == [c["chunk_id"] for c in want["citations"]]
    assert [r.chunk_id for r in turn.sources] == [c["chunk_id"] for c in want["contexts"]]
    assert ({(r.prompt_n, r.chunk_id) for r in turn.sources if r.prompt_n}
            == {(p["n"], p["chunk_id"]) for p in want["passages_used"]})          # the same prompt passages
    if fake_kind == "fake-like-llama.cpp":                      # the budget left passages out, in both
        assert len(want["passages_used"]) < 4 and any("prompt budget of 260" in w for w in want["warnings"])
        assert turn.warnings == want["warnings"]


# --------------------------------------------------------------------------- the log
def test_the_app_logs_start_up_and_each_question_with_timings(app_env, new_app):
    data = app_env()
    at = new_app().run()
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception
    log = (data / "logs" / "serve.log").read_text()
    assert "warm-up: embedder ready in" in log and "models loaded in" in log
    line = next(x for x in log.splitlines() if QUESTION in x)
    assert "answered, 1 citation(s)" in line and "first token" in line and "total" in line


def test_a_warmup_error_is_shown_on_the_page(app_env, new_app):
    data = app_env(GUIDES_RERANKER="no-such-reranker")
    at = new_app().run()
    at.chat_input[0].set_value(QUESTION).run()               # waits for the warm-up, then fails to rerank
    assert not at.exception
    err = [m for m in at.chat_message if m.name == "assistant"][-1].error[0].value
    assert "no-such-reranker" in err and "GUIDES_RERANKER" in err
    at.run()
    banner = " ".join(e.value for e in at.main.error)
    assert "Start-up: loading the reranker failed" in banner and "no-such-reranker" in banner
    assert "warm-up: reranker failed" in (data / "logs" / "serve.log").read_text()


def test_the_passage_cache_gives_way_to_questions(small_index, tmp_path, monkeypatch):
    """The background passage cache (after the models load) pauses while a question is answered."""
    import shutil

    import retrieval.rerank

    class Recorder:
        name = "recorder"

        def __init__(self):
            self.batches = []

        def warm(self, passages):
            self.batches.append(len(passages))
            return len(passages)

    rec = Recorder()
    monkeypatch.setattr(retrieval.rerank, "load_reranker", lambda s: rec)
    shutil.copytree(small_index[1], tmp_path / "data")
    s = Settings(guides_dir=small_index[0], data_dir=tmp_path / "data", embed_model="fake:hash", llm="fake",
                 reranker="recorder")
    eng = Engine()
    with eng.question():                          # a question is being answered when the models are loaded
        w = eng.warm(s)
        assert w.wait(30)
        time.sleep(0.5)
        assert rec.batches == [] and not w.done.is_set()
    assert w.done.wait(30) and not w.errors
    assert sum(rec.batches) > 50 and max(rec.batches) <= 16
    eng.close()
