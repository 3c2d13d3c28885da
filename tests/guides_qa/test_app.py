"""app.py driven by streamlit.testing.v1.AppTest: fake LLM, hash embedder, a small real-guide index."""

from __future__ import annotations

import re
import sqlite3

from streamlit.testing.v1.element_tree import Block

from core.text import line_range, plain_inline
from answer.answerer import describe_status
from guides_qa.ui.view import escape_md

QUESTION = "What is LoRA and why is it preferred over full fine-tuning?"
TWO_PART = "What is the KV cache, and why does beam search need more memory?"


# --------------------------------------------------------------------------- helpers
def blocks(node, type_: str) -> list[Block]:
    """Every container of ``type_`` (e.g. 'popover') below ``node``, in page order."""
    out = []
    for child in getattr(node, "children", {}).values():
        if isinstance(child, Block):
            if child.type == type_:
                out.append(child)
            out.extend(blocks(child, type_))
    return out


def texts(node) -> list[str]:
    """The text of every markdown-like element below ``node``."""
    out = []
    for child in getattr(node, "children", {}).values():
        if isinstance(child, Block):
            out.extend(texts(child))
        elif child.type in ("markdown", "caption", "alert", "error", "warning", "info", "success"):
            out.append(str(child.value))
    return out


def ask(at, question: str):
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def assistant(at, i: int = -1):
    return [m for m in at.chat_message if m.name == "assistant"][i]


def questions(at) -> list[str]:
    return [m.markdown[0].value for m in at.chat_message if m.name == "user"]


# --------------------------------------------------------------------------- tests
def test_ask_gets_a_cited_answer_with_sources_and_latency(app_env, new_app):
    at = new_app().run()
    assert not at.exception and not at.warning          # the index is there: no "run guides ingest"
    sidebar = " ".join(texts(at.sidebar))
    assert "transformers-llm-interview-questions.md" in sidebar and "chunks" in sidebar and "last ingest" in sidebar

    ask(at, QUESTION)
    msg = assistant(at)
    answer = msg.markdown[0].value
    assert "fine-tuning" in answer and ":blue-badge[1]" in answer   # passage [1]'s words; marker [1] drawn as a badge
    latency = [c.value.replace("\u00a0", " ") for c in msg.caption if c.value.startswith(":material/timer:")]
    assert len(latency) == 1
    assert all(stage in latency[0] for stage in ("rewrite", "retrieve", "rerank", "first token", "total"))

    # Sources: every retrieved passage with fused score, rerank score, rank before and after reranking.
    df = msg.dataframe[0].value
    assert len(df) == 10
    assert {"rank", "fused rank", "fused", "rerank", "reranker", "section", "lines", "passage"} <= set(df.columns)
    assert list(df["rank"]) == list(range(1, 11))
    assert df["fused rank"].is_unique and df["fused rank"].between(1, 20).all()   # reranked from 20 candidates
    assert (df["prompt"] == "[1] ✓").sum() == 1 and df["fused"].notna().all() and df["rerank"].is_monotonic_decreasing


def test_open_a_citation_shows_passage_section_lines_and_highlight(app_env, new_app):
    at = ask(new_app().run(), QUESTION)
    pops = [p for p in blocks(assistant(at), "popover") if p.proto.popover.label.startswith("[1]")]
    assert len(pops) == 1
    label = pops[0].proto.popover.label
    assert "lines" in label
    body = texts(pops[0])
    joined = "\n".join(body)
    assert ".md`" in joined and "lines" in joined                   # guide file and line range
    assert "›" in joined or "Section" in joined                     # section path
    passage = next(t for t in body if t.startswith('<div class="gq-passage">'))
    assert "<mark>" in passage and "</mark>" in passage             # supporting sentence highlighted
    assert "<script" not in passage


def test_follow_up_shows_rewritten_query(app_env, new_app):
    at = ask(new_app().run(), "What is QLoRA?")
    ask(at, "How much memory does it save?")
    follow = assistant(at)
    rewritten = [c.value for c in follow.caption if "Follow-up searched as" in c.value]
    assert rewritten and "QLoRA" in rewritten[0]
    assert questions(at) == ["What is QLoRA?", "How much memory does it save?"]


def test_new_conversation_clears_history(app_env, new_app):
    at = ask(new_app().run(), QUESTION)
    assert len(at.chat_message) == 2
    at.sidebar.button[1].click().run()          # 0: Re-index guides, 1: New conversation
    assert at.sidebar.button[1].label == "New conversation"
    assert len(at.chat_message) == 0
    ask(at, "What is the KV cache?")
    assert questions(at) == ["What is the KV cache?"]


def test_missing_index_says_what_to_run_then_reindex_builds_it(empty_env, new_app):
    guides, data = empty_env
    at = new_app().run()
    warning = " ".join(w.value for w in at.warning)
    assert "guides ingest" in warning and "make run" in warning
    assert at.chat_input[0].disabled

    # Re-index from the sidebar, then a new guide, picked up without restarting the app.
    at.sidebar.button[0].click().run()
    assert not at.exception
    assert "Chunks:" in at.sidebar.success[0].value and not at.warning
    assert not at.chat_input[0].disabled
    ask(at, QUESTION)
    assert assistant(at).markdown[0].value

    (guides / "zorblax.md").write_text(
        "# Zorblax Guide\n\n## Zorblax tokenizer\n\nThe zorblax tokenizer splits words into quarks. "
        "Each quark is embedded separately by the zorblax encoder.\n", encoding="utf-8")
    at.sidebar.button[0].click().run()
    assert "1 added" in at.sidebar.success[0].value or "added" in at.sidebar.success[0].value
    assert "zorblax.md" in " ".join(texts(at.sidebar))
    ask(at, "How does the zorblax tokenizer split words?")
    labels = [p.proto.popover.label for p in blocks(assistant(at), "popover")]
    assert any("Zorblax tokenizer" in lab for lab in labels), labels


def test_backend_error_names_the_setting_and_keeps_the_conversation(app_env, new_app):
    app_env(GUIDES_LLM_MODEL="x", GUIDES_LLM_BASE_URL="http://127.0.0.1:9/v1")
    at = ask(new_app().run(), QUESTION)                        # the fake LLM (GUIDES_LLM=fake) answers
    assert ":blue-badge[1]" in assistant(at).markdown[0].value

    at.sidebar.selectbox[0].select("openai").run()             # this session switches to an unreachable endpoint
    ask(at, "What is the KV cache?")
    err = assistant(at).error[0].value
    assert "127.0.0.1:9" in err and "GUIDES_LLM_BASE_URL" in err and "GUIDES_LLM_MODEL" in err
    # The first answer is still there, and the conversation goes on.
    assert questions(at) == [QUESTION, "What is the KV cache?"]
    assert ":blue-badge[1]" in assistant(at, 0).markdown[0].value

    at.sidebar.selectbox[0].select("fake").run()
    ask(at, "What is the KV cache?")
    assert len(at.chat_message) == 6 and not assistant(at).error


def test_backend_from_env_unreachable(app_env, new_app):
    app_env(GUIDES_LLM="openai", GUIDES_LLM_MODEL="x", GUIDES_LLM_BASE_URL="http://127.0.0.1:9/v1")
    at = ask(new_app().run(), QUESTION)
    err = assistant(at).error[0].value
    assert "Cannot reach the LLM endpoint" in err and "GUIDES_LLM_BASE_URL" in err


def test_feedback_is_stored_in_sqlite(app_env, new_app):
    data = app_env()
    at = ask(new_app().run(), QUESTION)
    at.feedback[0].set_value(1).run()                       # thumbs up
    db = data / "feedback.sqlite"
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM feedback")]
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal" and len(rows) == 1
    row = rows[0]
    assert row["rating"] == 1 and row["question"] == QUESTION and "[1]" in row["answer"]
    assert '"chunk_id"' in row["citations"] and '"llm": "fake"' in row["settings"] and row["created_at"]

    at.text_area[0].input("Clear, and the citation is right.")
    submit = [b for b in at.button if b.label == "Send"][0]
    submit.click().run()
    at.feedback[0].set_value(0).run()                       # changed mind: thumbs down
    with sqlite3.connect(db) as con:
        got = con.execute("SELECT rating, comment, COUNT(*) FROM feedback").fetchone()
    assert got == (-1, "Clear, and the citation is right.", 1)


def test_two_sessions_do_not_share_history(app_env, new_app):
    a, b = new_app().run(), new_app().run()
    ask(a, QUESTION)
    b.run()
    assert len(b.chat_message) == 0
    ask(b, "What is the KV cache?")
    a.run()
    assert questions(a) == [QUESTION] and questions(b) == ["What is the KV cache?"]


def test_rerank_off_for_this_session_hides_rerank_columns(app_env, new_app):
    at = new_app().run()
    at.sidebar.toggle[0].set_value(False)
    at.sidebar.slider[0].set_value(5)
    ask(at, QUESTION)
    df = assistant(at).dataframe[0].value
    assert len(df) == 5 and "rerank" not in df.columns and "reranker" not in df.columns
    assert list(df["fused rank"]) == list(df["rank"])


def test_refusal_is_shown_without_citations(app_env, new_app):
    """A model that answers from its own memory: no sentence is in the passages, so the answer is refused."""
    app_env(GUIDES_LLM="fake:offtopic")
    at = ask(new_app().run(), "Zyxwv qwertz plonk frobnicate?")
    msg = assistant(at)
    text = msg.info[0].value
    assert text.startswith("The guides don't") and "cover this" in text and "Nearest sections:" in text
    assert [c.value for c in msg.caption if c.value.startswith("Why:")]
    assert not [p for p in blocks(msg, "popover") if p.proto.popover.label.startswith("[")]
    assert len(msg.dataframe[0].value) == 10                  # the sources are still there to inspect


def test_the_evidence_is_shown_under_the_answer_without_a_click(app_env, new_app):
    """Issue 9 §3: the guides' sentence each cited sentence aligned with, with guide › section, lines and state,
    outside any popover or expander."""
    at = ask(new_app().run(), "Why is LoRA preferred over full fine-tuning?")
    msg = assistant(at)
    top = [m.value for m in msg.markdown]                 # direct children only: no click needed
    assert "**From the guides**" in top
    turn = at.session_state["history"][-1]
    (ev, *_) = turn.evidence
    quote = " ".join(ev["quote"].split())
    assert any(v.startswith("> ") and quote[:40] in v for v in top)
    hit = next(c for c in turn.citations if c.n == ev["n"])
    assert quote in " ".join(hit.text.split())            # the guide's own words
    caption = next(c.value for c in msg.caption if c.value.startswith(f"[{ev['n']}] "))
    assert f"lines {ev['lines'][0]}–{ev['lines'][1]}" in caption and ev["guide"] in caption
    assert "verified" in caption
    assert turn.status in ("verified", "partial")       # the fake model echoes one sentence: it may state little
    assert any(("Answer " + describe_status(turn.status).split(":")[0]) in c.value for c in msg.caption)


def test_an_incomplete_answer_names_the_part_it_leaves_out_in_one_evidence_block(app_env, new_app):
    """A verified answer to a two-part question that answers one part: the status line names the other part,
    and the evidence it leaves out is in the same one evidence block, marked "not in the answer"."""
    at = ask(new_app().run(), TWO_PART)
    msg = assistant(at)
    turn = at.session_state["history"][-1]
    assert turn.status == "incomplete" and turn.left_out and turn.missing_parts
    top = [m.value for m in msg.markdown]
    assert top.count("**From the guides**") == 1 and not any("also say" in v for v in top)
    assert any("not in the answer" in c.value for c in msg.caption)
    assert any(f"\u201c{turn.missing_parts[0]}\u201d" in c.value for c in msg.caption if "may be incomplete" in c.value)
    e = turn.left_out[0]
    assert any(v.startswith("> ") and " ".join(plain_inline(e["quote"]).split())[:30] in v.replace("\\", "")
               for v in top)
    assert any(c.value.startswith(f"[{e['n']}] ") and line_range(e["lines"]) in c.value for c in msg.caption)
    shown = [" ".join(q["quote"].split()) for q in turn.evidence + turn.left_out]
    assert len(shown) == len(set(shown))                                     # each quote once under the answer
    quotes = ["> " + escape_md(" ".join(plain_inline(q["quote"]).split())) for q in turn.evidence + turn.left_out]
    assert all(v in top for v in quotes) and not any("**" in v for v in quotes)   # the guides' markdown, not markup
    assert not any("–" in c.value and re.search(r"lines (\d+)–\1\b", c.value) for c in msg.caption)  # "line 92"
    assert any("may be incomplete" in c.value for c in msg.caption)
