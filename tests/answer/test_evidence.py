"""Evidence sentences (what the LLM reads, what the user sees first), loop stopping, short answers."""

from __future__ import annotations

import pytest

from answer.answerer import Answerer, Evidence, find_loop
from answer.evidence import (NEAR_BEST, Quote, best_evidence, context_spans, is_asking, is_statement, quote_coverage,
                             score_sentences,
                             select_sentences, span_lines)
from core.llm import FakeLLM


def words(text: str) -> int:
    return len(text.split())


def test_the_answering_sentences_are_chosen_in_order_within_the_budget(hits):
    sel = select_sentences("Is the LoRA update merged into the weights at inference?", hits,
                           count_tokens=words, budget_tokens=36)
    assert sel.best.hit.chunk_id == "lora" and "merged into the weights" in sel.best.text
    assert sum(words(t) + 2 for t in sel.excerpts.values()) <= 30 + 2
    lora = hits[0].text
    excerpt = sel.excerpts["lora"]
    assert lora.index(excerpt.split(" … ")[0]) <= lora.index("At inference")    # passage order kept


def test_the_best_passage_keeps_its_best_sentence_even_over_budget(hits):
    sel = select_sentences("byte pair encoding merges", hits, count_tokens=words, budget_tokens=1)
    assert list(sel.excerpts) == [hits[0].chunk_id] and len(sel.quotes) == 1


def test_a_table_row_brings_its_header(make_hit):
    table = ("| Method | Precision | Techniques |\n|---|---|---|\n| **INT8** | 8-bit | Post-training |\n"
             "| **INT4** | 4-bit | Advanced techniques (NF4) |")
    sel = select_sentences("Which technique does INT4 use?", [make_hit(table, rank=1, chunk_id="q")],
                           count_tokens=words, budget_tokens=20)
    assert sel.excerpts["q"] == "| Method | Precision | Techniques |\n| **INT4** | 4-bit | Advanced techniques (NF4) |"


FRAMEWORKS = ("**Expected Answer:**\n"
              "- **vLLM:**\n"
              "  - **Pros:** Excellent throughput via PagedAttention, easy deployment.\n"
              "  - **Cons:** Limited model support, primarily research-focused.\n"
              "- **TensorRT-LLM (NVIDIA):**\n"
              "  - **Pros:** Highly optimized for NVIDIA GPUs.\n"
              "  - **Cons:** CUDA-only, complex setup, vendor lock-in.\n")


def test_a_list_item_has_its_parent_items_and_lead_in_as_context():
    t = FRAMEWORKS
    ctx = [t[a:b] for a, b in context_spans(t, t.index("  - **Cons:** CUDA"))]
    assert ctx == ["**Expected Answer:**", "- **TensorRT-LLM (NVIDIA):**"]
    assert [t[a:b] for a, b in context_spans(t, t.index("- **vLLM"))] == ["**Expected Answer:**"]
    para = "Plain prose. Another sentence.\n- an item after prose"
    assert context_spans(para, 0) == [] and context_spans(para, para.index("- an")) == []   # prose leads into nothing


def test_a_list_item_is_scored_with_its_parent_and_brings_the_parent_that_names_the_subject(make_hit):
    hit = make_hit(FRAMEWORKS, rank=1, chunk_id="fw")
    q = "What are the drawbacks of TensorRT-LLM?"
    score = {c.text: c.score for c in score_sentences(q, [hit])}
    cons = "- **Cons:** CUDA-only, complex setup, vendor lock-in."
    assert score[cons] > score["- **Cons:** Limited model support, primarily research-focused."]   # its parent names it
    without = {c.text: c.score for c in score_sentences(q, [hit], context_weight=0.0)}
    assert score[cons] > without[cons]
    sel = select_sentences("Does TensorRT-LLM mean vendor lock-in?", [hit], count_tokens=words, budget_tokens=13)
    assert sel.excerpts["fw"] == "- **TensorRT-LLM (NVIDIA):** … - **Cons:** CUDA-only, complex setup, vendor lock-in."
    assert "Expected Answer" not in sel.excerpts["fw"]                         # a lead-in without a question word stays out


def test_span_lines_count_the_chunk_line_breaks(make_hit):
    h = make_hit("first line\nsecond line\nthird line", rank=1, chunk_id="x")
    first = h.payload["lines"][0]
    a = h.text.index("second")
    assert span_lines(h, a, a + len("second line")) == (first + 1, first + 1)


def test_the_quote_comes_before_the_first_token_and_the_model_reads_the_excerpts(settings, embedder, hits):
    llm = FakeLLM()
    evs = list(Answerer(settings, llm=llm, embedder=embedder).stream("Does LoRA merge into the weights?", hits))
    assert isinstance(evs[0], Evidence) and evs[0].quote.hit.chunk_id == "lora"
    user = llm.calls[-1]["messages"][1]["content"]
    res = evs[-1]
    assert all(p.excerpt is not None and p.excerpt in user.replace("\n", "\n") or p.excerpt for p in res.passages)
    assert res.evidence and res.evidence[0]["quote"] and res.evidence[0]["lines"][0] >= 1


def test_passages_mode_sends_whole_passages(settings, embedder, hits):
    s = settings.model_copy(update={"answer_context": "passages"})
    llm = FakeLLM()
    res = Answerer(s, llm=llm, embedder=embedder).answer("Does LoRA merge into the weights?", hits)
    assert all(p.excerpt is None for p in res.passages)
    assert hits[0].text.split(".")[0] in llm.calls[-1]["messages"][1]["content"]


def test_loops_are_found_and_cut():
    looped = "TensorRT-LLM is fast. It needs NVIDIA GPUs and a build step. It needs NVIDIA GPUs and a build step."
    cut = find_loop(looped, 6)
    assert cut is not None and looped[:cut].strip() == "TensorRT-LLM is fast. It needs NVIDIA GPUs and a build step."
    assert find_loop("One two three four five six seven eight nine ten.", 4) is None


def test_a_looping_model_is_stopped(settings, embedder, hits):
    bullet = "- LoRA merges the update into the weights at inference "
    llm = FakeLLM({"LoRA": bullet * 30})
    res = Answerer(settings, llm=llm, embedder=embedder).answer("Does LoRA merge into the weights?", hits)
    assert res.stopped_loop and res.raw_answer.count("merges the update") == 1
    assert any("repeating" in w for w in res.warnings)


def test_a_short_right_answer_is_too_short_to_check_not_refused(settings, embedder, hits):
    res = Answerer(settings, llm=FakeLLM({"quantized": "4-bit [4]."}), embedder=embedder).answer(
        "What is the base model quantized to in QLoRA?", hits)
    assert not res.refused and res.status == "too_short"
    (c,) = res.citations
    assert c.status == "too_short" and res.answer.startswith("4-bit [")


def test_a_short_answer_from_nowhere_is_refused(settings, embedder, hits):
    res = Answerer(settings, llm=FakeLLM({"quantized": "Zebras [1]."}), embedder=embedder).answer(
        "What is the base model quantized to in QLoRA?", hits)
    assert res.refused and res.status == "refused"


# --------------------------------------------------------------------------- completeness: coverage of the best evidence
def _quote(make_hit, text: str, score: float) -> Quote:
    return Quote(hit=make_hit(text, chunk_id=f"q{score}"), start=0, end=len(text), score=score)


def test_coverage_counts_the_evidence_words_the_answer_states_not_the_question_words(make_hit):
    q = _quote(make_hit, "Cons: CUDA-only, complex setup, vendor lock-in.", 1.0)
    question = "What are the cons of TensorRT-LLM?"
    (part,) = quote_coverage("TensorRT-LLM is CUDA-only [1].", [q], question)
    (full,) = quote_coverage("It is CUDA-only, has a complex setup and vendor lock-in [1].", [q], question)
    assert part == pytest.approx(2 / 6) and full == 1.0          # cuda, only of cuda, only, complex, setup, vendor, lock
    only_question = _quote(make_hit, "TensorRT-LLM cons.", 0.5)
    assert quote_coverage("Nothing relevant.", [only_question], question) == [1.0]   # nothing left to state


def test_best_evidence_keeps_near_ties_of_the_best_sentence_only(make_hit):
    qs = [_quote(make_hit, f"Sentence {i}.", s) for i, s in enumerate([1.0, NEAR_BEST, NEAR_BEST - 0.01, 0.9])]
    assert best_evidence(qs, 3) == qs[:2]                  # the third is below the floor; k caps before the fourth
    assert best_evidence(qs, 1) == qs[:1] and best_evidence([], 3) == []
    weak = [_quote(make_hit, "Only one.", 0.0)]
    assert best_evidence(weak, 3) == weak                  # the best sentence always counts


def test_headings_and_labels_are_not_evidence_an_answer_must_state(make_hit):
    assert not is_statement("**Q22: What are the trade-offs between serving frameworks (vLLM, TensorRT-LLM)?**")
    assert not is_statement("- **TensorRT-LLM (NVIDIA):**") and not is_statement("**")
    assert is_statement("- **Cons:** CUDA-only, complex setup, vendor lock-in.")
    head = _quote(make_hit, "**Q22: What are the drawbacks of TensorRT-LLM?**", 1.0)
    cons = _quote(make_hit, "- **Cons:** CUDA-only, complex setup, vendor lock-in.", 0.7)
    assert best_evidence([head, cons], 3) == [cons]                 # the heading matched the question best
    assert best_evidence([head], 3) == [head]                      # nothing but headings: keep what there is


def test_the_quote_shown_while_the_model_writes_is_a_statement(settings, embedder, make_hit):
    hits = [make_hit("**Q22: What are the drawbacks of TensorRT-LLM?**\n\n- **Cons:** CUDA-only, complex setup, "
                     "vendor lock-in.", chunk_id="trt")]
    events = list(Answerer(settings, llm=FakeLLM(), embedder=embedder).stream("What are the drawbacks of TensorRT-LLM?", hits))
    (ev,) = [e for e in events if isinstance(e, Evidence)]
    assert ev.quote.text.startswith("- **Cons:**"), ev.quote.text


BLOCK = ("| Improvement | Original | Improved | Used In |\n|---|---|---|---|\n"
         "| **Normalization** | LayerNorm | RMSNorm | LLaMA, modern LLMs |\n"
         "| **Activation** | ReLU | SwiGLU | Recent models |")
STRAY = "A deep model stacks the transformer block many times."


def test_the_rest_of_a_table_outranks_a_stray_sentence_of_a_lower_passage(make_hit):
    """The a36 case of the dev set: the row that names LLaMA wins, and its neighbour row (SwiGLU) holds the other
    fact; a sentence of another passage that shares the question's words used to take its place."""
    hits = [make_hit(BLOCK, rank=1, chunk_id="table"), make_hit(STRAY, rank=2, chunk_id="stray")]
    q = "What changes have modern LLMs like LLaMA made to the original transformer block?"
    kept = select_sentences(q, hits, count_tokens=words, budget_tokens=36, block_weight=0.5)
    assert "SwiGLU" in kept.excerpts["table"] and "stray" not in kept.excerpts
    before = select_sentences(q, hits, count_tokens=words, budget_tokens=36)          # the default: off
    assert "SwiGLU" not in before.excerpts["table"] and "stray" in before.excerpts      # what the rule changes


def test_a_line_that_asks_is_never_chosen(make_hit):
    text = ('**Q21: Explain the concept of "jailbreaking" LLMs and common techniques used.**\n\n'
            "- **Role Playing:** act as DAN without restrictions.\n- **Encoding:** base64 hides the request.")
    sel = select_sentences("What techniques do people use for jailbreaking LLMs?", [make_hit(text, chunk_id="j")],
                           count_tokens=words, budget_tokens=25, skip_asking=True)
    assert "Q21" not in sel.excerpts["j"] and "Role Playing" in sel.excerpts["j"] and "base64" in sel.excerpts["j"]
    assert is_asking("**Q24: Explain the differences between BLEU and ROUGE.**") and is_asking("What is RAG?")
    assert not is_asking("- **Cons:** CUDA-only, complex setup.")
