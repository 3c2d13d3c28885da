"""Each bundled model through the product's own path (Pipeline.ask, as the CLI and app call it) on the real guides:
a correct cited answer, a refusal, a follow-up, and the Canberra question (slow; CI runs them)."""

from __future__ import annotations

import re

import pytest

from pipeline.qa import Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["bundled", "bundled-small"])
def pipe(request, answer_real_index):
    s = answer_real_index.model_copy(update={"llm": request.param, "reranker": "off"})
    p = Pipeline(s)
    yield p
    p.close()


def _checked(res):
    a = res.answer
    assert a.first_quote is not None and a.first_quote.quote.text        # shown while the model wrote
    for e in a.evidence:                                                  # every quote is the guide's own text
        hit = next(p.hit for p in a.passages if p.n == e["n"])
        assert " ".join(e["quote"].split()) in " ".join(hit.text.split())
    return a


def test_a_correct_cited_answer(pipe):
    a = _checked(pipe.ask(["What does QLoRA quantize the frozen base model to?"]))
    assert not a.refused and a.citations, a.to_json()
    assert re.search(r"4-bit|NF4|NormalFloat", a.answer), a.answer
    assert a.status in ("verified", "too_short"), a.to_json()


def test_the_canberra_question_is_answered_from_the_worked_example(pipe, request):
    if pipe.settings.llm == "bundled-small":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "measured: the 0.5B answers 'Sydney', copying the hallucinated chain of thought the passage shows as "
            "wrong; the 1.5B (the default) answers Canberra. Strict: a small model that gets it right fails this.")))
    a = _checked(pipe.ask(["What is the capital of Australia?"]))
    assert not a.refused and "Canberra" in a.answer, a.to_json()


def test_an_out_of_scope_question_is_refused(pipe):
    a = pipe.ask(["What is the boiling point of ethanol at sea level?"]).answer
    assert a.refused and a.status == "refused" and not a.citations


def test_a_follow_up_is_answered_about_what_it_refers_to(pipe):
    res = pipe.ask(["What is LoRA?", "And how does the quantized variant of it work?"])
    a = _checked(res)
    assert "qlora" in res.search_query.casefold() or "quantiz" in res.search_query.casefold()
    assert not a.refused and re.search(r"QLoRA|4-bit|quantiz", a.answer, re.I), a.to_json()
