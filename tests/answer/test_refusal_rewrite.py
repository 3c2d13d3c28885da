"""Refusal gating and follow-up rewriting."""

from __future__ import annotations

import pytest

from core.llm import FakeLLM
from answer.refusal import (RefusalGate, missing_entities, model_declined, named_entities, refusal_text,
                            retrieval_confidence)
from answer.rewrite import Rewriter, clean_llm_rewrite, heuristic_rewrite, needs_context, topic_terms


# --------------------------------------------------------------------------- refusal
def test_named_entities_skip_sentence_initial_words():
    assert named_entities("What does Dijkstra's algorithm cost on an AMD MI300X? Explain LoRA.") == [
        "Dijkstra", "AMD", "MI300X", "LoRA"]
    assert named_entities("how does attention work") == []


def test_missing_entities_against_passages(hits):
    assert missing_entities("How does LoRA compare with QLoRA on a GPU?", hits) == []
    assert missing_entities("What is the capital of Mongolia?", hits) == ["Mongolia"]
    assert missing_entities("Is PPO-based LoRA slower?", hits) == ["PPO-based"]


def test_retrieval_confidence_prefers_rerank(make_hit):
    assert retrieval_confidence([make_hit("x", scores={"hybrid": 0.03, "rerank": 2.5})]) == ("rerank", 2.5)
    assert retrieval_confidence([make_hit("x", scores={"hybrid": 0.03})]) == ("hybrid", 0.03)
    assert retrieval_confidence([make_hit("x", score=0.7, scores={})]) == ("score", 0.7)
    assert retrieval_confidence([]) == ("none", None)


def test_gate_refuses_unrelated_question(hits, embedder):
    v = RefusalGate(embedder=embedder, min_cosine=0.25).check("capital city of Mongolia", hits)
    assert v.refuse and "cosine" in v.reason and v.signals["max_cosine"] < 0.25


def test_gate_refuses_question_about_an_entity_no_passage_mentions(hits, embedder):
    v = RefusalGate(embedder=embedder, min_cosine=0.0, entity_cosine=0.99).check(
        "Does LoRA training run on an AMD MI300X?", hits)
    assert v.refuse and "MI300X" in v.reason


def test_gate_passes_a_covered_question(hits, embedder):
    v = RefusalGate(embedder=embedder).check("How does byte pair encoding merge the most frequent pair?", hits)
    assert not v.refuse and v.signals["max_cosine"] > 0.5 and v.signals["missing_entities"] == []


def test_gate_uses_rerank_threshold_only_when_set(make_hit, embedder):
    hs = [make_hit("byte pair encoding merges frequent pairs", scores={"rerank": -3.0})]
    q = "byte pair encoding merges frequent pairs"
    assert RefusalGate(embedder=embedder, min_rerank=0.0).check(q, hs).refuse
    assert not RefusalGate(embedder=embedder, min_rerank=None).check(q, hs).refuse


def test_gate_without_hits_refuses():
    assert RefusalGate().check("anything", []).refuse


def test_gate_caches_passage_vectors(hits, embedder):
    calls = []
    real = embedder.embed
    embedder.embed = lambda texts, **kw: calls.append(len(texts)) or real(texts, **kw)
    gate = RefusalGate(embedder=embedder)
    gate.check("LoRA merges weights", hits)
    gate.check("QLoRA 4-bit", hits)
    assert calls == [1, 4, 1]          # question, passages, question (passages from the cache)


@pytest.mark.parametrize("text, declined", [
    ("The guides do not cover this.", True),
    ("The passages do not contain information about Dijkstra.", True),
    ("I don't know.", True),
    ("", True),
    ("LoRA merges its update into the weights [1].", False),
    ("LoRA merges weights [1]. The guides do not mention its latency.", False),
])
def test_model_declined(text, declined):
    assert model_declined(text) is declined


def test_refusal_text_names_nearest_sections(hits):
    t = refusal_text(hits)
    assert t.startswith("The guides don't cover this.")
    assert "Guide › LoRA" in t and "Guide › QLoRA" in t and "Guide › BPE" in t and "RoPE" not in t


# --------------------------------------------------------------------------- rewrite
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
