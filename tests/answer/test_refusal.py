"""Refusal: the retrieval gate, declined answers, the refusal text."""

from __future__ import annotations

import pytest

from answer.refusal import (RefusalGate, missing_entities, model_declined, named_entities, refusal_text,
                            retrieval_confidence)


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
