"""The app's logic outside Streamlit: views, highlighting, error messages, the shared engine."""

from __future__ import annotations

import threading
import time

import pytest

from core.settings import Settings
from guides_qa.ui import view
from guides_qa.ui.engine import Engine, QueuedLLM, single_slot
from core.types import Hit


def hit(rank: int, scores: dict, text: str = "Some passage text.") -> Hit:
    payload = {"chunk_id": f"c{rank}", "guide": "g.md", "guide_title": "Guide", "section": f"Guide › S{rank}",
               "section_path": [f"S{rank}"], "lines": [rank * 10, rank * 10 + 3], "text": text}
    return Hit(payload=payload, score=0.5, rank=rank, scores=scores)


# --------------------------------------------------------------------------- highlighting
def test_highlight_escapes_html_and_marks_spans():
    text = "Use <script>alert(1)</script> never. LoRA trains **low-rank** matrices.\nNext line."
    start = text.index("LoRA")
    out = view.highlight(text, [(start, text.index("\n"))])
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "<mark>LoRA trains <strong>low-rank</strong> matrices.</mark>" in out
    assert "\n" not in out and "&#10;Next line." in out


def test_highlight_merges_overlapping_spans_and_clips():
    out = view.highlight("abcdefghij", [(2, 5), (4, 7), (8, 99), (3, 3)])
    assert out == "ab<mark>cdefg</mark>h<mark>ij</mark>"
    assert view.highlight("plain", []) == "plain"


def test_highlight_keeps_dollar_and_colon_inert():
    out = view.highlight("cost: $5 and $6", [])
    assert "$" not in out and ":" not in out.replace("&#58;", "")


def test_answer_markdown_turns_markers_into_badges():
    md = view.answer_markdown("LoRA is cheap [1][2]. It costs $5 [3].")
    assert md == "LoRA is cheap :blue-badge[1]:blue-badge[2]. It costs \\$5 :blue-badge[3]."


def test_escape_md():
    assert view.escape_md("Q1: *bold* [x](y) `c`") == "Q1\\: \\*bold\\* \\[x\\](y) \\`c\\`"


# --------------------------------------------------------------------------- tables and lines
def test_source_rows_with_and_without_reranking():
    from answer.prompt import Passage

    reranked = [hit(1, {"hybrid": 0.9, "fused_rank": 3, "ce": 2.5, "rerank": 0.8}),
                hit(2, {"hybrid": 1.2, "fused_rank": 1, "ce": 0.1, "rerank": 0.5})]
    rows = view.source_rows(reranked, [Passage(n=1, hit=reranked[0])], cited_ns={1})
    assert [(r.rank, r.rank_before) for r in rows] == [(1, 3), (2, 1)]
    assert rows[0].fused == 0.9 and rows[0].rerank == 0.8 and rows[0].prompt_n == 1 and rows[0].cited
    assert rows[1].prompt_n is None and not rows[1].cited and rows[1].lines == "20–23" and rows[1].section == "S2"
    plain = view.source_rows([hit(1, {"hybrid": 0.7})])
    assert plain[0].rank_before == 1 and plain[0].rerank is None and plain[0].ce is None
    assert plain[0].as_row()["prompt"] == "" and view.source_rows(reranked, [Passage(n=1, hit=reranked[0])],
                                                                     {1})[0].as_row()["prompt"] == "[1] ✓"


def test_latency_line_in_stage_order():
    line = view.latency_line({"total": 1234.0, "rewrite": 0.04, "retrieve": 31.6, "first_token": 40.0, "cite": 5})
    assert line.replace("\u00a0", " ") == "rewrite 0.0 ms · retrieve 32 ms · first token 40 ms · total 1.2 s"
    assert line.count(" ") == 6                     # line breaks only around the " · " separators
    assert view.latency_line({}) == ""


def test_conversation_leaves_out_failed_turns_and_caps_history():
    ok = [view.TurnView(id=str(i), question=f"q{i}", created="") for i in range(8)]
    bad = view.TurnView(id="x", question="broken", created="", error=view.ErrorView("llm", "t", "d"))
    assert view.conversation(ok[:2] + [bad], "new") == ["q0", "q1", "new"]
    assert view.conversation(ok, "new", max_history=3) == ["q5", "q6", "q7", "new"]
    assert view.conversation([], "first") == ["first"]


# --------------------------------------------------------------------------- errors
def test_describe_error_names_the_setting_to_fix():
    from core.llm import LLMError
    from pipeline.qa import InputError
    from ingest.store import IndexMissingError
    from retrieval.rerank import RerankerError

    s = Settings(llm="openai", llm_base_url="http://127.0.0.1:9/v1", llm_model="m", reranker="trained")
    e = view.describe_error(LLMError("Cannot reach the LLM endpoint"), s)
    assert e.kind == "llm" and "GUIDES_LLM_BASE_URL" in e.hint and "127.0.0.1:9" in e.hint
    assert "GUIDES_LLM_MODEL" in e.hint
    e = view.describe_error(LLMError("x"), Settings(llm="bundled"))
    assert "GUIDES_LLM" in e.hint and "bundled" in e.hint
    e = view.describe_error(IndexMissingError("No index found"), s)
    assert e.kind == "index" and "guides ingest" in e.hint and "make run" in e.hint
    e = view.describe_error(RerankerError("not trained"), s)
    assert e.kind == "reranker" and "GUIDES_RERANKER" in e.hint and "'trained'" in e.hint
    assert view.describe_error(InputError("empty"), s).kind == "input"
    assert view.describe_error(KeyError("boom"), s).kind == "other"


def test_index_status_missing_and_present(tmp_path):
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest

    guides = tmp_path / "guides"
    guides.mkdir()
    s = Settings(guides_dir=guides, data_dir=tmp_path / "data", embed_model="fake:hash")
    st = view.index_status(s)
    assert not st.ok and "guides ingest" in st.message
    (guides / "a.md").write_text("# A guide\n\n## Part\n\nLoRA trains low-rank matrices. " * 3)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    st = view.index_status(s)
    assert st.ok and st.n_chunks >= 1 and st.created and st.version
    assert st.guides == [{"guide": "a.md", "title": "A guide", "chunks": st.n_chunks}]


def test_llm_choices_and_settings_snapshot_hide_secrets():
    assert view.llm_choices(Settings(llm="fake")) == ["fake", "bundled", "bundled-small"]
    assert view.llm_choices(Settings(llm="bundled", llm_model="m")) == ["bundled", "bundled-small", "openai"]
    snap = view.settings_snapshot(Settings(qdrant_api_key="secret"))
    assert "qdrant_api_key" not in snap and snap["llm"] == "bundled"


# --------------------------------------------------------------------------- engine
def test_engine_pipelines_share_index_and_embedder(tmp_path):
    s = Settings(guides_dir=tmp_path, data_dir=tmp_path / "data", embed_model="fake:hash", llm="fake",
                 reranker="fake:overlap")
    eng = Engine()
    base = eng.pipeline(s)
    fast = eng.pipeline(s, top_k=3, rerank=False)
    assert eng.pipeline(s) is base and fast is not base
    assert fast.settings.top_k == 3 and fast.settings.reranker == "off" and not fast.has_reranker
    assert base.settings.top_k == 10 and base.has_reranker
    assert fast.index is base.index and fast.embedder is base.embedder and fast.llm is base.llm
    other = eng.pipeline(s.model_copy(update={"data_dir": tmp_path / "other"}))
    assert other.index is not base.index
    assert eng.pipeline(s, rerank=True) is base                  # the configured reranker is already on
    with pytest.raises(ValueError, match="top_k"):
        eng.pipeline(s, top_k=0)


def test_single_slot_backends():
    assert single_slot("bundled") and single_slot("bundled-small") and single_slot("gguf:/m.gguf") and single_slot("fake")
    assert not single_slot("openai")


class SlowLLM:
    name = "slow"
    context_window = 512

    def __init__(self):
        self.active = 0
        self.max_active = 0

    def stream(self, messages, *, max_tokens, temperature, stop=None):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for w in ("a", " b", " c"):
                time.sleep(0.02)
                yield w
        finally:
            self.active -= 1

    def count_tokens(self, text):
        return len(text.split())


def test_serial_llm_runs_one_generation_at_a_time():
    inner = SlowLLM()
    llm = QueuedLLM(inner)
    outs = []

    def run():
        outs.append("".join(llm.stream([], max_tokens=8, temperature=0.0)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outs == ["a b c"] * 4 and inner.max_active == 1


def test_serial_llm_releases_the_slot_when_a_stream_is_abandoned():
    from core.llm import LLMError

    llm = QueuedLLM(SlowLLM(), wait_seconds=0.5)
    gen = llm.stream([], max_tokens=8, temperature=0.0)
    next(gen)
    with pytest.raises(LLMError, match="busy"):
        next(llm.stream([], max_tokens=8, temperature=0.0))
    gen.close()                                  # e.g. the page reran mid-answer
    assert "".join(llm.stream([], max_tokens=8, temperature=0.0)) == "a b c"


def test_concurrent_questions_during_a_reindex(small_index, tmp_path):
    """Several sessions asking at once while a re-index publishes a new version: no crash, no lost answer."""
    import shutil

    from ingest.pipeline import run_ingest

    guides, data = small_index
    my_guides = tmp_path / "guides"
    shutil.copytree(guides, my_guides)
    shutil.copytree(data, tmp_path / "data")
    s = Settings(guides_dir=my_guides, data_dir=tmp_path / "data", embed_model="fake:hash", llm="fake",
                 reranker="fake:overlap")
    eng = Engine()
    first_version = eng.pipeline(s).index.refresh().vid
    errors, answers = [], []

    def session(k: int):
        pipe = eng.pipeline(s, top_k=5 + k % 2, rerank=bool(k % 2))
        for q in ("What is LoRA?", "What is the KV cache?", "Why scale attention by sqrt(d_k)?") * 3:
            try:
                res = pipe.ask([q])
                answers.append((k, res.answer.answer, len(res.hits)))
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    threads = [threading.Thread(target=session, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    (my_guides / "extra.md").write_text("# Extra\n\n## Quarks\n\nThe zorblax tokenizer splits words into quarks.\n")
    try:
        summary = run_ingest(s, embedder=eng.embedder(s), progress=False)
    except Exception as e:  # noqa: BLE001
        errors.append(f"re-index: {e!r}")
    for t in threads:
        t.join()
    assert not errors, (f"{len(errors)} concurrent questions failed, e.g. {errors[0]}. A snowball stemmer shared "
                        f"by threads (ingest/bm25.py, answer/citations.py: _STEMMER) is not thread-safe.")
    assert len(answers) == 36 and all(n in (5, 6) and a for _, a, n in answers)
    assert summary.added >= 1
    res = eng.pipeline(s).ask(["How does the zorblax tokenizer split words?"])
    assert eng.pipeline(s).index.version.vid != first_version
    assert any(h.payload["guide"] == "extra.md" for h in res.hits)
    eng.close()
