"""The app: ask about the study guides, read cited answers, inspect the sources; or practise their questions.

Run with ``guides serve`` (or ``streamlit run app.py``). Settings come from the environment
(GUIDES_*) like the CLI. This file only renders; pipeline.qa does the work and
guides_qa.ui holds the drawing helpers.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402
import uuid  # noqa: E402

import streamlit as st  # noqa: E402

from core.settings import SettingsError, load_settings  # noqa: E402
from guides_qa.feedback import FeedbackStore  # noqa: E402
from guides_qa.logs import setup_logging  # noqa: E402
from guides_qa.ui import render, view  # noqa: E402
from guides_qa.ui.engine import Engine, shared_engine  # noqa: E402

st.set_page_config(page_title="Guides Q&A", page_icon=":material/menu_book:", layout="centered")


@st.cache_resource(show_spinner=False)
def get_engine() -> Engine:
    """One per process: the index handle, embedder, LLM and reranker every session shares."""
    return shared_engine()


try:
    settings = load_settings()
except SettingsError as e:
    st.error(f"{e}".replace("\n", "  \n"))
    st.stop()

setup_logging(settings)
log = logging.getLogger("guides_qa.app")
engine = get_engine()
warmup = engine.warm(settings)
store = FeedbackStore.for_settings(settings)
ss = st.session_state
ss.setdefault("history", [])
ss.setdefault("session_id", uuid.uuid4().hex)
render.inject_css()

def chat_page() -> None:
    """Ask, read cited answers, inspect the sources."""
    # --------------------------------------------------------------------------- sidebar
    with st.sidebar:
        st.header("Guides")
        index_box = st.container()
        if st.button("Re-index guides", icon=":material/refresh:", width="stretch",
                     help=f"Read {settings.guides_dir} again and index what changed; the app keeps answering meanwhile."):
            from ingest.pipeline import run_ingest

            bar = st.progress(0.0, text="Starting…")
            try:
                summary = run_ingest(settings, embedder=engine.embedder(settings), progress=False,
                                     on_stage=lambda stage, f: bar.progress(min(1.0, max(0.0, f)), text=stage.capitalize()))
                ss["flash"] = ("success", summary.render())
            except Exception as e:  # noqa: BLE001 - shown in the sidebar; the old index stays published
                ss["flash"] = ("error", f"Re-indexing failed: {e}")
            st.rerun()
        kind, text = ss.pop("flash", (None, None))
        if kind == "success":
            st.success(text.replace("\n", "  \n"), icon=":material/check:")
        elif kind == "error":
            st.error(text)
        status = view.index_status(settings)
        with index_box:
            render.index_panel(status)

        st.header("Answer settings")
        st.caption("For this browser session only.")
        top_k = st.slider("Passages to retrieve (top-k)", 1, max(30, settings.top_k), settings.top_k, key="opt_top_k")
        can_rerank = settings.reranker != "off"
        rerank = st.toggle(f"Rerank ({settings.reranker})" if can_rerank else "Rerank", value=can_rerank,
                           disabled=not can_rerank, key="opt_rerank",
                           help=f"GUIDES_RERANKER={settings.reranker}"
                           + ("" if can_rerank else "; set it (e.g. to 'maxsim') to enable reranking"))
        llm = st.selectbox("LLM backend", view.llm_choices(settings), key="opt_llm",
                           help="GUIDES_LLM sets the default; 'openai' uses GUIDES_LLM_BASE_URL and GUIDES_LLM_MODEL.")
        options = {"top_k": top_k, "rerank": rerank, "llm": llm}

        st.divider()
        if st.button("New conversation", icon=":material/add_comment:", width="stretch"):
            ss["history"] = []
            ss.pop("_feedback_saved", None)
        with st.expander("Feedback export"):
            st.download_button("JSONL", data=lambda: store.export_text("jsonl"), file_name="feedback.jsonl",
                               mime="application/jsonl", icon=":material/download:", width="stretch")
            st.download_button("CSV", data=lambda: store.export_text("csv"), file_name="feedback.csv",
                               mime="text/csv", icon=":material/download:", width="stretch")
            st.caption(f"Stored in `{store.path}`")

    # --------------------------------------------------------------------------- chat
    st.title("Guides Q&A")
    st.caption("Answers from the LLM-interview study guides, cited to guide, section and line range.")
    render.warmup_errors(warmup)
    if not status.ok:
        todo = "" if "make run" in status.message else "\n\nBuild it with `guides ingest` (or `make run`) in a terminal."
        st.warning(f"{status.message}{todo}\n\nOr click **Re-index guides** in the sidebar.", icon=":material/database:")
    elif not ss["history"]:
        st.info("Ask something the guides cover, e.g. *Why is attention scaled by √d_k?* or *What is LoRA?* "
                "Follow-up questions use the conversation.", icon=":material/lightbulb:")

    feedback = render.FeedbackUI(store, ss["session_id"])
    for turn in ss["history"]:
        render.render_turn(turn, feedback=feedback)

    question = st.chat_input("Ask about the guides…", disabled=not status.ok, max_chars=settings.max_question_chars)
    if question:
        turns = view.conversation(ss["history"], question)
        render.render_user(question)
        with st.chat_message("assistant"):
            render.wait_for_warmup(warmup)
            try:
                pipe = engine.pipeline(settings, **options)
            except Exception as e:  # noqa: BLE001 - e.g. a model that cannot load: shown in the chat
                log.error("question could not start: %s", e, exc_info=e)
                turn = view.error_turn(question, e, engine.session_settings(settings, **options), options=options,
                                       turns=turns)
                ss["history"].append(turn)
            else:
                turn = render.stream_answer(pipe, turns, question=question, history=ss["history"], options=options)
            log.info("question [session %s] %r: %s", ss["session_id"][:8], question, view.turn_summary(turn))
            render.render_turn_body(turn, feedback=feedback)


st.navigation([st.Page(chat_page, title="Chat", icon=":material/chat:", default=True),
               st.Page("guides_qa/ui/practice_page.py", title="Practice", icon=":material/school:",
                       url_path="practice")]).run()
