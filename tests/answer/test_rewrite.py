"""Follow-up rewriting: heuristic and LLM rewrites."""

from __future__ import annotations

import pytest

from core.llm import FakeLLM
from answer.rewrite import Rewriter, clean_llm_rewrite, heuristic_rewrite, needs_context, topic_terms



def test_needs_context():
    assert needs_context("How much memory does it need?")
    assert needs_context("And QLoRA?")
    assert not needs_context("What is rotary position embedding in transformers?")


def test_topic_terms_keep_surface_forms_and_skip_scaffolding():
    assert topic_terms("What is QLoRA and how is it different from regular LoRA?") == ["QLoRA", "LoRA"]
    assert topic_terms("How does nucleus (top-p) sampling work?", exclude=["sampl"]) == ["nucleus", "top-p"]


def test_heuristic_rewrite_adds_previous_topic_only_when_needed():
    hist = ["What is QLoRA and how is it different from regular LoRA?"]
    assert heuristic_rewrite("How much GPU memory would it need?", hist) == "How much GPU memory would it need? (QLoRA LoRA)"
    standalone = "What does byte pair encoding merge first?"
    assert heuristic_rewrite(standalone, hist) == standalone
    assert heuristic_rewrite("How much memory does it need?", []) == "How much memory does it need?"


def test_rewriter_methods():
    hist = ["What is QLoRA?"]
    assert Rewriter("off").rewrite("Why is it cheap?", hist).method == "none"
    r = Rewriter("heuristic").rewrite("Why is it cheap?", hist)
    assert (r.query, r.method, r.changed) == ("Why is it cheap? (QLoRA)", "heuristic", True)
    with pytest.raises(ValueError, match="Supported methods"):
        Rewriter("magic")
    with pytest.raises(ValueError, match="needs an LLM"):
        Rewriter("llm")


def test_llm_rewrite_uses_the_llm_reply():
    llm = FakeLLM({"Last question: Why is it cheap?": "Why is QLoRA cheap?\nextra line"})
    r = Rewriter("llm", llm=llm).rewrite("Why is it cheap?", ["What is QLoRA?"])
    assert (r.query, r.method) == ("Why is QLoRA cheap?", "llm")
    sent = llm.calls[-1]["messages"][-1]["content"]
    assert "1. What is QLoRA?" in sent and llm.calls[-1]["stop"] == ["\n"] and llm.calls[-1]["temperature"] == 0.0


def test_llm_rewrite_falls_back_to_heuristic_and_says_so():
    llm = FakeLLM({"Last question": ""})
    r = Rewriter("llm", llm=llm).rewrite("Why is it cheap?", ["What is QLoRA?"])
    assert r.query == "Why is it cheap? (QLoRA)" and "unusable" in r.method


def test_llm_rewrite_skips_standalone_questions():
    llm = FakeLLM()
    r = Rewriter("llm", llm=llm).rewrite("What is rotary position embedding in transformers?", ["What is QLoRA?"])
    assert r.method == "none" and llm.calls == []


def test_clean_llm_rewrite():
    assert clean_llm_rewrite('Standalone question: "Why is QLoRA cheap?"', "Why is it cheap?") == "Why is QLoRA cheap?"
    assert clean_llm_rewrite("", "q") is None
    assert clean_llm_rewrite("x" * 500, "Why is it cheap?") is None


def test_llm_rewrite_that_repeats_an_earlier_turn_or_drops_the_question_is_rejected():
    q, hist = "How is it combined with temperature?", ["How does top-p sampling choose the next token?"]
    assert clean_llm_rewrite("How does top-p sampling choose the next token?", q, hist) is None
    assert clean_llm_rewrite("What is top-p sampling used for in chatbots?", q, hist) is None
    assert clean_llm_rewrite("How is it combined with temperature?", q, hist) is None      # nothing resolved
    assert clean_llm_rewrite("How is top-p sampling combined with temperature?", q, hist) == \
        "How is top-p sampling combined with temperature?"
    llm = FakeLLM({"Last question": hist[0]})
    r = Rewriter("llm", llm=llm).rewrite(q, hist)
    assert "unusable" in r.method and r.query == f"{q} (top-p sampling)"


def test_heuristic_rewrite_adds_only_the_first_topic_words():
    hist = ["How does caching keys and values speed up token-by-token generation?"]
    q = "Why does it become a memory problem?"
    assert heuristic_rewrite(q, hist) == f"{q} (caching keys)"
    assert heuristic_rewrite(q, hist, max_terms=4) == f"{q} (caching keys values speed)"
    assert heuristic_rewrite(q, hist, max_terms=0) == q
    # an earlier turn without topic words is skipped for the one before it
    assert heuristic_rewrite(q, ["What is QLoRA?", "Why?"]) == f"{q} (QLoRA)"
