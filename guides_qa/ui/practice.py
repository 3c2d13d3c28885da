"""The Practice page: the guides ask, the student answers, the grade shows what was covered and missed.

A question card (guide › section), an answer box, then the grade: covered points ticked, contradicted
points with the reason, missed points in the guide's own words with their lines, the whole reference answer
one click away, and the next due question. Below: due / new / mastered counts, seen and mastered per guide,
and the scores over time. No text generation: every word shown under a grade is the guide's.
"""

from __future__ import annotations

import html
import time

import streamlit as st

from core.settings import Settings
from core.text import line_range, plain_inline

STATE_MARK = {"covered": ":green[✓]", "contradicted": ":red[✗]", "missed": ":orange[○]"}


@st.cache_data(show_spinner=False, max_entries=4)
def _bank(data_dir: str, vid: str, _settings: Settings):
    """The current version's bank, read once per index version."""
    from practice import load_bank

    return load_bank(_settings)


def _store(settings: Settings):
    from practice import store_path
    from practice.schedule import PracticeStore

    key = f"_practice_store:{store_path(settings)}"
    if key not in st.session_state:
        st.session_state[key] = PracticeStore(store_path(settings))
    return st.session_state[key]


def _grader(settings: Settings, engine):
    from practice import grader_for

    embedder = engine.embedder(settings) if settings.practice_grader == "embed" else None
    return grader_for(settings, embedder=embedder)


def _md(text: str) -> str:
    """A guide's words as markdown-safe plain text (its own marks dropped, ours not triggered)."""
    return html.escape(plain_inline(text)).replace("*", "\\*").replace("_", "\\_").replace("[", "\\[")


def page(settings: Settings, engine) -> None:
    from ingest.bank import BankError
    from ingest.store import IndexLayout
    from practice.schedule import INTERVALS_DAYS, PracticeStoreError, filter_entries

    ss = st.session_state
    st.title("Practice")
    st.caption("The guides' own interview questions. Answer in your own words; the grade compares your answer "
               "with the guide's key points (no AI writes anything here).")
    try:
        vid = IndexLayout(settings).current_vid()
        if vid is None:
            raise BankError("No index yet: build it with `guides ingest`, or **Re-index guides** on the Chat page.")
        bank = _bank(str(settings.data_dir), vid, settings)
        store = _store(settings)
    except (BankError, PracticeStoreError) as e:
        st.warning(str(e), icon=":material/database:")
        return

    with st.sidebar:
        st.header("Practice")
        profile = st.text_input("Profile", value=ss.get("practice_profile", settings.practice_profile),
                                key="practice_profile", help="Whose history and schedule (setting practice_profile).")
        guides = sorted({e.guide for e in bank})
        guide = st.selectbox("Guide", ["All guides", *guides], key="practice_guide")
        section = st.text_input("Section contains", key="practice_section")
    entries = filter_entries(bank, guide=None if guide == "All guides" else guide, section=section or None)
    if not entries:
        st.info("No question matches this guide and section.")
        return
    counts = store.counts(profile, entries)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Due now", counts["due"])
    c2.metric("New", counts["new"])
    c3.metric("Mastered", counts["mastered"], help=f"In the last box: not due for {INTERVALS_DAYS[-1]} days.")
    c4.metric("Questions", counts["questions"])

    by_id = {e.id: e for e in entries}
    if ss.get("practice_qid") not in by_id:
        queue = store.due(profile, entries)
        fresh = [e for e in queue if e.id not in ss.get("practice_skip", [])]
        ss["practice_qid"] = (fresh or queue)[0].id if queue else None
        ss.pop("practice_grade", None)
    qid = ss["practice_qid"]
    if qid is None:
        st.success("Nothing is due in this selection. Come back tomorrow, or pick another guide.",
                   icon=":material/celebration:")
    else:
        _card(by_id[qid], settings, engine, store, profile)
    _progress(store, profile, bank)


def _card(entry, settings, engine, store, profile) -> None:
    ss = st.session_state
    with st.container(border=True):
        st.caption(f"{_md(entry.guide)} › {_md(entry.section)}")
        st.markdown(f"**{_md(entry.question)}**")
        graded = ss.get("practice_grade")
        if graded is None or graded.entry.id != entry.id:
            with st.form("practice_answer", border=False):
                answer = st.text_area("Your answer", height=160, key=f"practice_text_{entry.id}",
                                      placeholder="Answer as you would in the interview; bullet points are fine.")
                if st.form_submit_button("Grade my answer", icon=":material/grading:", type="primary"):
                    g = _grader(settings, engine)(entry, answer)
                    store.record(profile, g)
                    ss["practice_grade"] = g
                    st.rerun()
            if st.button("Skip to the next question", icon=":material/skip_next:"):
                _next(store, profile, entry)
            return
    _grade(graded)
    if settings.practice_feedback:
        _feedback(graded, settings, engine)
    if st.button("Next question", icon=":material/arrow_forward:", type="primary", key="practice_next"):
        _next(store, profile, entry)


def _next(store, profile, entry) -> None:
    """On to the next due (or new) question; a skipped one waits until the queue comes round again."""
    ss = st.session_state
    ss["practice_skip"] = [*ss.get("practice_skip", []), entry.id][-50:]
    ss.pop("practice_grade", None)
    ss["practice_qid"] = None
    st.rerun()


def _feedback(g, settings, engine) -> None:
    """The model's one or two sentences on what was missed, apart from the grade and labelled as the model's."""
    from practice.feedback import feedback

    key = f"practice_feedback_{g.entry.id}_{hash(g.answer)}"
    if key not in st.session_state:
        with st.spinner("The model is reading what you missed…"):
            try:
                st.session_state[key] = feedback(engine.llm(settings), g)
            except Exception as e:  # noqa: BLE001 - the grade stands without it; say why it is missing
                st.session_state[key] = f"(No feedback: {type(e).__name__}: {e})"
    if st.session_state[key]:
        st.info(f"**Feedback, written by the model from the guide's text:** {_md(st.session_state[key])}",
                icon=":material/smart_toy:")


def _grade(g) -> None:
    st.subheader(f"Score {g.score:.0%}")
    st.caption(f"{len(g.covered)} of {len(g.points)} key points covered"
               + (f", {len(g.contradicted)} contradicted (counted against)" if g.contradicted else "")
               + (f". {g.note.capitalize()}." if g.note else "."))
    for p in g.points:
        where = f"{_md(g.entry.guide)}, {line_range(p.point.lines)}"
        if p.state == "covered":
            st.markdown(f"{STATE_MARK['covered']} {_md(p.point.text)}")
        elif p.state == "contradicted":
            st.markdown(f"{STATE_MARK['contradicted']} **You said otherwise**: {_md(p.reason or '')}  \n"
                        f"The guide: {_md(p.point.text)} ({where})")
        else:
            st.markdown(f"{STATE_MARK['missed']} **Missed**: {_md(p.point.text)} ({where})")
    with st.expander(f"The guide's whole answer ({_md(g.entry.guide)}, {line_range(g.entry.answer_lines)})"):
        st.markdown(_md(g.entry.reference).replace("\n", "  \n"))
    with st.expander("Your answer"):
        st.text(g.answer or "(empty)")


def _progress(store, profile, bank) -> None:
    st.divider()
    st.subheader("Progress")
    slots = store.slots(profile)
    from practice.schedule import INTERVALS_DAYS

    rows = []
    for guide in sorted({e.guide for e in bank}):
        ids = [e.id for e in bank if e.guide == guide]
        rows.append({"guide": guide, "questions": len(ids), "seen": sum(i in slots for i in ids),
                     "mastered": sum(i in slots and slots[i].box == len(INTERVALS_DAYS) for i in ids)})
    st.dataframe(rows, hide_index=True, width="stretch")
    hist = store.history(profile)
    if hist:
        st.caption("Scores over time (each attempt)")
        st.line_chart({"score": [h["score"] for h in hist]}, height=180)
    else:
        st.caption("No attempts yet: your scores will be charted here.")
