"""Streamlit drawing for the chat app: one function per part of the page; data comes from ``view``.

Example (inside a Streamlit script)::

    with st.chat_message("assistant"):
        turn = stream_answer(pipe, ["What is LoRA?"], question="What is LoRA?", history=[])
        render_turn_body(turn, feedback=FeedbackUI(store, session_id))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import streamlit as st

from answer.answerer import ANSWER_STATES, describe_status
from core.text import line_range, plain_inline
from guides_qa.feedback import FeedbackEntry, FeedbackStore
from guides_qa.ui.view import (CitationView, IndexStatus, TurnView, answer_markdown, error_turn, escape_md, fmt_ms,
                               latency_line, loading_message, new_turn_id, passage_html, queue_message, shorten,
                               turn_from_result)

log = logging.getLogger("guides_qa.app")

INTERRUPTED = "The answer was interrupted because the page reloaded (a button was clicked or a setting changed)."

CSS = """
<style>
.gq-passage { white-space: pre-wrap; font-size: 0.9rem; line-height: 1.5; max-height: 22rem; overflow-y: auto;
              border-left: 3px solid rgba(49, 51, 63, 0.2); padding: 0.25rem 0 0.25rem 0.75rem; }
.gq-passage mark { background: #fde68a; color: inherit; padding: 0 0.1em; border-radius: 2px; }
.gq-passage code { font-size: 0.85em; }
</style>
"""


def inject_css() -> None:
    st.html(CSS)


# --------------------------------------------------------------------------- sidebar
def index_panel(status: IndexStatus) -> None:
    """The indexed guides with chunk counts, and when the index was built."""
    if not status.ok:
        st.warning("No usable index yet.")
        return
    lines = [f"- **{escape_md(g['title'])}** — {g['chunks']} chunks  \n  `{g['guide']}`" for g in status.guides]
    st.markdown("\n".join(lines))
    created = (status.created or "?").replace("T", " ")[:16]
    st.caption(f"{status.n_chunks} chunks · last ingest {created} · version `{status.version}`")
    for s in status.skipped:
        st.caption(f"Skipped: {escape_md(s)}")


# --------------------------------------------------------------------------- one turn
@dataclass
class FeedbackUI:
    """What the feedback widgets need: where to store and whose session it is."""
    store: FeedbackStore
    session_id: str

    def entry(self, turn: TurnView) -> FeedbackEntry:
        snap = {**turn.settings, "session_options": turn.options}
        return FeedbackEntry(
            answer_id=turn.id, session_id=self.session_id, question=turn.question,
            answer=turn.answer if turn.ok else f"[error] {turn.error.title}: {turn.error.detail}",
            turns=turn.turns, refused=turn.refused, citations=turn.citations_json(),
            search_query=turn.search_query, settings=snap, timings=turn.timings)


def render_user(question: str) -> None:
    with st.chat_message("user"):
        st.markdown(escape_md(question))


def render_turn(turn: TurnView, *, feedback: FeedbackUI | None) -> None:
    render_user(turn.question)
    with st.chat_message("assistant"):
        render_turn_body(turn, feedback=feedback)


def render_turn_body(turn: TurnView, *, feedback: FeedbackUI | None) -> None:
    if not turn.ok:
        render_error(turn)
        return
    if turn.rewritten_query:
        st.caption(f":material/subdirectory_arrow_right: Follow-up searched as: *{escape_md(turn.rewritten_query)}*")
    if turn.refused:
        st.info(answer_markdown(turn.answer), icon=":material/search_off:")
        if turn.refusal_reason:
            st.caption(f"Why: {escape_md(turn.refusal_reason)}")
    else:
        st.markdown(answer_markdown(turn.answer))
        if turn.status in ANSWER_STATES:
            icon = STATUS_LABEL.get(turn.status, (":material/rule:",))[0]
            st.caption(f"{icon} Answer {escape_md(describe_status(turn.status, turn.missing_parts))}")
        render_evidence(turn)
    for w in turn.warnings:
        st.caption(f":material/warning: {escape_md(w)}")
    if turn.citations:
        with st.container(horizontal=True, gap="small"):
            for c in turn.citations:
                render_citation(c)
    st.caption(f":material/timer: {latency_line(turn.timings)}")
    render_sources(turn)
    if feedback is not None:
        render_feedback(turn, feedback)


def render_error(turn: TurnView) -> None:
    e = turn.error
    if turn.partial:
        st.markdown(answer_markdown(turn.partial) + " …")
    body = f"**{e.title}.** {e.detail.replace('$', chr(92) + '$')}"
    if e.hint:
        body += f"\n\n{e.hint}"
    st.error(body, icon=":material/error:")
    st.caption("Your conversation is kept; ask again once this is fixed.")


STATUS_LABEL = {
    "verified": (":material/check_circle:", "verified: the quoted sentence states it"),
    "contradicted": (":material/cancel:", "contradicted"),
    "unverified": (":material/help:", "not verified"),
    "too_short": (":material/short_text:", "too short to check"),
}


def status_caption(status: str, reasons: list[str]) -> str:
    icon, label = STATUS_LABEL.get(status, STATUS_LABEL["unverified"])
    why = [r for r in reasons if r != "too short to check"]
    return f"{icon} {label}" + (f" ({escape_md('; '.join(why))})" if why else "")


def render_evidence(turn: TurnView) -> None:
    """Under the answer, without a click, one block: the guides' sentences that each cited sentence aligned
    with, marked with what they do for the answer, then the best evidence an incomplete answer leaves out,
    marked so. Each quote once (the answerer leaves a quote already shown out of ``left_out``)."""
    if turn.evidence or turn.left_out:
        st.markdown("**From the guides**")
    for e in turn.evidence:
        _render_quote_entry(e, " · " + status_caption(e["status"], e.get("reasons", [])))
    for e in turn.left_out:
        _render_quote_entry(e, " · :material/playlist_remove: not in the answer")


def _render_quote_entry(e: dict, tail: str = "") -> None:
    """One answer.answerer.quote_entry: the quote, then [n] guide › section · file lines a–b, then ``tail``."""
    st.markdown("> " + escape_md(" ".join(plain_inline(e["quote"]).split())))
    st.caption(f"[{e['n']}] {escape_md(e['header'])} · `{e['guide']}` {line_range(e['lines'])}" + tail)


def render_quote(ph, ev) -> None:
    """The best-matching sentence of the guides, shown while the model writes."""
    q = ev.quote
    ph.markdown(f"> {escape_md(' '.join(plain_inline(q.text).split()))}\n\n"
                f":gray[The closest sentence in the guides · {escape_md(ev.header)} · {line_range(q.lines)}]")


def render_citation(c: CitationView) -> None:
    """A popover per cited passage: guide, section path, line range, the passage with supporting spans marked."""
    label = f"[{c.n}] {escape_md(shorten(c.leaf, 48))} · {line_range(c.lines)}"
    with st.popover(label, icon=":material/check_circle:" if c.verified else ":material/help:"):
        st.markdown(f"**[{c.n}] {escape_md(c.guide_title)}**  \n"
                    f"`{c.guide}` · {line_range(c.lines)}")
        st.caption(" › ".join(escape_md(s) for s in c.section_path) or escape_md(c.section))
        for s in c.supports:
            st.markdown("> " + answer_markdown(s.sentence))
            st.caption(f"Support {s.score:.2f} · {status_caption(s.status, s.reasons)} — the highlighted sentence below")
        st.markdown(passage_html(c), unsafe_allow_html=True)


def render_sources(turn: TurnView) -> None:
    """The retrieval playground: every retrieved passage with fused score, rerank scores and both ranks."""
    n = len(turn.sources)
    with st.expander(f"Sources and scores · {n} passages · {fmt_ms(turn.timings.get('total', 0.0))}",
                     icon=":material/manage_search:"):
        q = turn.search_query or turn.question
        st.markdown(f"Searched for: *{escape_md(q)}*" + (" (rewritten follow-up)" if turn.rewritten_query else ""))
        if not n:
            st.caption("No passage was retrieved.")
            return
        reranked = any(r.rerank is not None for r in turn.sources)
        rows = [r.as_row() for r in turn.sources]
        if not reranked:
            for r in rows:
                del r["rerank"], r["reranker"]
        cfg = {
            "rank": st.column_config.NumberColumn("rank", help="Rank after reranking", width=50),
            "fused rank": st.column_config.NumberColumn("fused rank", help="Rank after hybrid fusion, before reranking",
                                                        width=75),
            "fused": st.column_config.NumberColumn("fused", format="%.3f", width=60,
                                                   help="Hybrid (dense + BM25) fused score"),
            "rerank": st.column_config.NumberColumn("rerank", format="%.3f", width=60,
                                                    help="Combined rerank score (orders the list)"),
            "reranker": st.column_config.NumberColumn("reranker", format="%.3f", width=75,
                                                        help="The reranker's own score (maxsim or cross-encoder), before combining with the fused rank"),
            "prompt": st.column_config.TextColumn("prompt", width=60, help="[n]: the LLM saw it as passage n; ✓ cited"),
            "section": st.column_config.TextColumn("section", width="medium"),
            "lines": st.column_config.TextColumn("lines", width=70),
            "passage": st.column_config.TextColumn("passage", width="large"),
        }
        st.dataframe(rows, hide_index=True, column_config=cfg, width="stretch", height=min(36 * (n + 1) + 4, 420))


def render_feedback(turn: TurnView, fb: FeedbackUI) -> None:
    saved = st.session_state.setdefault("_feedback_saved", {})
    with st.container(horizontal=True, gap="small", vertical_alignment="center"):
        st.feedback("thumbs", key=f"fb_rating_{turn.id}", on_change=_save_rating, args=(turn, fb))
        with st.popover("Comment", icon=":material/comment:"):
            with st.form(key=f"fb_form_{turn.id}", border=False):
                st.text_area("What was good or wrong about this answer?", key=f"fb_comment_{turn.id}",
                             max_chars=5000)
                if st.form_submit_button("Send"):
                    fb.store.set_comment(fb.entry(turn), st.session_state.get(f"fb_comment_{turn.id}", ""))
                    saved[turn.id] = "comment"
        if saved.get(turn.id):
            st.caption("Thanks, feedback saved.")


def _save_rating(turn: TurnView, fb: FeedbackUI) -> None:
    value = st.session_state.get(f"fb_rating_{turn.id}")
    rating = None if value is None else (1 if value == 1 else -1)
    fb.store.set_rating(fb.entry(turn), rating)
    st.session_state.setdefault("_feedback_saved", {})[turn.id] = "rating"


# --------------------------------------------------------------------------- start-up and queue
def warmup_errors(warmup) -> None:
    """Each part that failed to load at start-up, with its cause (questions that need it will say so too)."""
    for step in warmup.errors if warmup is not None else ():
        st.error(f"**Start-up: loading the {escape_md(step.name)} failed.** {escape_md(step.error)}  \n"
                 "Questions that need it will try again and show the error; the log has the details.",
                 icon=":material/error:")


def wait_for_warmup(warmup, *, poll: float = 0.5) -> None:
    """Hold a question until the models are loaded, saying so: 'Loading the models (reranker), 12 s so far…'."""
    if warmup is None or warmup.ready.is_set():
        return
    ph = st.empty()
    while not warmup.wait(poll):
        ph.markdown(f"*{loading_message(warmup.current, warmup.elapsed)}*")
    ph.empty()


# --------------------------------------------------------------------------- asking
def stream_answer(pipe, turns: list[str], *, question: str, history: list, options: dict | None = None,
                  waiting: str = "Searching the guides…") -> TurnView:
    """Stream the answer into the current container and append its TurnView (or the error's) to ``history``.

    A rerun that interrupts the stream (a click elsewhere) still leaves the question in ``history``.
    """
    from answer.answerer import Checking, Evidence, Token
    from guides_qa.ui.engine import queue_listener

    turn_id = new_turn_id()
    settings = pipe.settings
    quote_ph = st.empty()
    ph = st.empty()
    ph.markdown(f"*{waiting}*")
    streamed: list[str] = []
    result = None
    gen = None
    try:
        gen = pipe.ask_stream(turns)
        with queue_listener(lambda ahead, waited: ph.markdown(f"*{queue_message(ahead, waited)}*")):
            for ev in gen:
                if isinstance(ev, Token):
                    streamed.append(ev.text)
                    ph.markdown(answer_markdown("".join(streamed)) + " ▌")
                elif isinstance(ev, Evidence):
                    render_quote(quote_ph, ev)
                elif isinstance(ev, Checking):
                    ph.markdown(answer_markdown("".join(streamed))
                                + f"\n\n*Checking {ev.sentences} sentence(s) against the guides…*")
                else:
                    result = ev
        if result is None:
            raise RuntimeError("The pipeline finished without an answer.")
    except Exception as e:  # noqa: BLE001 - every failure becomes a message in the chat
        log.error("question %r failed: %s", question, e, exc_info=e)
        ph.empty()
        turn = error_turn(question, e, settings, options=options, turns=turns, partial="".join(streamed),
                          turn_id=turn_id)
        history.append(turn)
        return turn
    except BaseException:        # Streamlit stops or reruns the script: keep the question, then let it go
        history.append(error_turn(question, InterruptedError(INTERRUPTED), settings, options=options, turns=turns,
                                  partial="".join(streamed), turn_id=turn_id))
        raise
    finally:
        if gen is not None:
            gen.close()
    ph.empty()
    quote_ph.empty()
    turn = turn_from_result(result, question=question, settings=settings, options=options, turn_id=turn_id)
    history.append(turn)
    return turn
