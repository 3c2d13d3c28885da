"""The evidence budget sized to the machine: the rule, and the answerer reading what it was measured for."""

from __future__ import annotations

import pytest

from answer.answerer import Answerer
from answer.budget import OVERHEAD_TOKENS, measure_prefill, size_budget
from core.llm import FakeLLM
from core.settings import Settings


def test_slow_model_keeps_the_floor():
    b = size_budget(36.0, target_s=3.0, floor=200, cap=3000)          # the bundled 1.5B on 2 cores
    assert b.tokens == 200 and b.rule == "measured" and "below the floor 200" in b.why


def test_faster_model_reads_more_and_the_context_window_caps_it():
    b = size_budget(300.0, target_s=3.0, floor=200, cap=3000)
    assert b.tokens == 900 - OVERHEAD_TOKENS and "900" not in b.why.split("=")[0] and b.prefill_tok_s == 300.0
    capped = size_budget(5000.0, target_s=3.0, floor=200, cap=3000)
    assert capped.tokens == 3000 and "context window" in capped.why
    assert size_budget(300.0, target_s=1.0, floor=200, cap=3000).tokens == 220   # a shorter wait, less evidence


def test_a_declared_speed_is_used_and_none_is_not_measured():
    llm = FakeLLM()
    assert measure_prefill(llm) is None
    llm.prefill_tokens_per_s = 120.0
    assert measure_prefill(llm) == 120.0


def test_measuring_times_one_uncached_one_token_completion():
    class Slow(FakeLLM):
        prefill_tokens_per_s = "measure"

        def stream(self, messages, *, max_tokens, temperature, stop=None):
            assert max_tokens == 1 and messages[0]["content"].startswith("[")
            import time
            time.sleep(0.05)
            yield "ok"

    speed = measure_prefill(Slow())
    assert speed is not None and 0 < speed < 10_000


def _answer(tmp_path, hits, embedder, speed, **kw):
    llm = FakeLLM({"": "LoRA freezes the pretrained weights [1]."})
    llm.prefill_tokens_per_s = speed
    llm.default_prompt_budget = 450
    a = Answerer(Settings(llm="fake", data_dir=tmp_path, **kw), llm=llm, embedder=embedder)
    *_, res = a.stream("Does LoRA merge into the weights at inference?", hits)
    assert not res.refused, res.refusal_reason
    return a, res


def test_the_answerer_reads_more_evidence_on_a_faster_machine(tmp_path, hits, embedder):
    slow, r_slow = _answer(tmp_path, hits, embedder, 36.0, answer_context_tokens=40)
    fast, r_fast = _answer(tmp_path, hits, embedder, 400.0, answer_context_tokens=40)
    assert r_slow.evidence_budget.tokens == 40 and r_fast.evidence_budget.tokens == 1200 - OVERHEAD_TOKENS
    assert slow.latency_budget == 450 and fast.latency_budget == 450 + r_fast.evidence_budget.tokens - 40
    assert r_fast.prompt_tokens > r_slow.prompt_tokens                # more of the passages reached the model
    assert r_fast.to_json()["evidence_budget"]["rule"] == "measured"


def test_a_fixed_budget_measures_nothing(tmp_path, hits, embedder):
    _, res = _answer(tmp_path, hits, embedder, 400.0, answer_context_budget="fixed", answer_context_tokens=40)
    assert res.evidence_budget.tokens == 40 and res.evidence_budget.rule == "fixed"
    _, res = _answer(tmp_path, hits, embedder, None)
    assert res.evidence_budget.rule == "fixed" and "no measurable reading speed" in res.evidence_budget.why


@pytest.mark.parametrize("bad", [0, -1])
def test_the_first_token_target_must_be_positive(tmp_path, bad):
    with pytest.raises(ValueError):
        Settings(llm="fake", data_dir=tmp_path, answer_first_token_s=bad)


def test_the_speed_is_remembered_for_a_week_per_model_and_machine(tmp_path):
    from answer.budget import SPEED_MAX_AGE_S, remembered_prefill

    calls = []

    class Probe(FakeLLM):
        prefill_tokens_per_s = "measure"

        def stream(self, messages, *, max_tokens, temperature, stop=None):
            calls.append(1)
            yield "ok"

    path = tmp_path / "logs" / "reading_speed.json"
    s1, fresh1 = remembered_prefill(Probe(), path, "bundled|2 cores", now=1000.0)
    s2, fresh2 = remembered_prefill(Probe(), path, "bundled|2 cores", now=2000.0)
    assert fresh1 and not fresh2 and s2 == round(s1, 2) and len(calls) == 1
    _, fresh3 = remembered_prefill(Probe(), path, "other model|2 cores", now=2000.0)
    _, fresh4 = remembered_prefill(Probe(), path, "bundled|2 cores", now=1000.0 + SPEED_MAX_AGE_S + 1)
    assert fresh3 and fresh4 and len(calls) == 3
    path.write_text("{not json")                       # a damaged file is measured over, not an error
    assert remembered_prefill(Probe(), path, "bundled|2 cores", now=0.0)[1]
