"""The answer check (answer/check.py): the LLM's second reading of each verified sentence, with the fake LLM;
the real 1.5B on labelled sentences is in the slow test at the end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from answer.answerer import Answerer, Checking
from answer.check import CHECK_SLOT, AnswerCheck, check_messages
from answer.citations import attribute
from answer.prompt import Passage
from core.llm import FakeLLM, LLMError, OpenAICompatLLM, yes_share
from core.settings import Settings

LABELS = Path(__file__).parent / "fixtures" / "verifier_labels.jsonl"


def test_the_check_prompt_puts_the_passage_first_and_drops_the_answer_lead_in():
    msgs = check_messages("According to the guides, paged attention uses blocks.", "PagedAttention stores KV in blocks.")
    assert msgs[0]["role"] == "system" and "yes or no" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.index("Passage:\nPagedAttention stores KV in blocks.") < user.index("Statement: Paged attention uses blocks.")


def _cited(make_hit, answer: str, passage: str):
    p = Passage(n=1, hit=make_hit(passage, chunk_id="p1"))
    return attribute(answer, [p]), [p]


PASSAGE = "QLoRA applies LoRA to a 4-bit quantized base model and fine-tunes a 65B model on one 48GB GPU."


@pytest.mark.parametrize("p_yes, status", [(0.9, "verified"), (0.65, "verified"), (0.64, "unverified"),
                                           (None, "unverified")])
def test_a_verified_sentence_stays_verified_only_when_the_check_says_yes(make_hit, p_yes, status):
    cited, passages = _cited(make_hit, "QLoRA fine-tunes a 65B model on one 48GB GPU [1].", PASSAGE)
    assert cited.status == "verified"
    llm = FakeLLM(checks={"Statement:": p_yes})
    calls = AnswerCheck(llm, threshold=0.65).apply(cited, passages)
    assert [c.p_yes for c in calls] == [p_yes] and cited.status == status
    sup = cited.citations[0].supports[0]
    assert sup.check == p_yes and sup.to_json()["check"] == (None if p_yes is None else round(p_yes, 3))
    if status == "unverified":
        assert any("answer check" in r for r in sup.reasons)            # the user is told why
    assert llm.check_calls[0]["slot"] == CHECK_SLOT and PASSAGE in llm.check_calls[0]["messages"][1]["content"]


def test_only_verified_sentences_are_checked(make_hit):
    cited, passages = _cited(make_hit, "QLoRA fine-tunes a 65B model on one 48GB GPU [1]. "
                                       "It needs eight GPUs with 80GB each for training runs [1].", PASSAGE)
    llm = FakeLLM(checks={"Statement:": 0.9})
    AnswerCheck(llm, threshold=0.65).apply(cited, passages)
    assert len(llm.check_calls) == cited.n_verified == 1


def test_the_fake_check_reads_the_statement_against_the_passage():
    llm = FakeLLM()
    assert llm.yes_probability(check_messages("QLoRA uses a 4-bit base model.", PASSAGE)) == 1.0
    assert llm.yes_probability(check_messages("QLoRA uses a ternary base model.", PASSAGE)) < 1.0


def test_the_check_is_off_by_default(settings, embedder, hits):
    llm = FakeLLM({"merge": ("LoRA freezes the pretrained weights and trains two low-rank matrices, and at inference the update is "
                          "merged into the weights, so there is no latency overhead.")},
                  checks={"Statement:": 0.1})
    res = Answerer(settings, llm=llm, embedder=embedder).answer("Does LoRA merge into the weights at inference?", hits)
    assert settings.answer_check == "off" and res.status == "verified" and not llm.check_calls and not res.checks


def test_the_answerer_checks_after_writing_and_demotes_what_the_check_rejects(settings, embedder, hits):
    on = settings.model_copy(update={"answer_check": "llm"})
    script = {"merge": ("LoRA freezes the pretrained weights and trains two low-rank matrices, and at inference the update is "
                          "merged into the weights, so there is no latency overhead.")}
    q = "Does LoRA merge into the weights at inference?"
    ok = Answerer(on, llm=FakeLLM(script), embedder=embedder).answer(q, hits)
    assert ok.status == "verified" and len(ok.checks) == 1 and "check" in ok.timings_ms
    no = FakeLLM(script, checks={"Statement:": 0.1})
    evs = list(Answerer(on, llm=no, embedder=embedder).stream(q, hits))
    assert isinstance(evs[-2], Checking) and evs[-2].sentences == 1
    res = evs[-1]
    assert res.status == "unverified" and not res.refused and res.answer == ok.answer
    assert res.to_json()["checks"] == [{"n": 1, "sentence": res.checks[0].sentence, "p_yes": 0.1}]
    off = FakeLLM(script, checks={"Statement:": 0.1})
    res = Answerer(on.model_copy(update={"answer_check": "off"}), llm=off, embedder=embedder).answer(
        q, hits)
    assert res.status == "verified" and not off.check_calls and "check" not in res.timings_ms


def test_yes_share_reads_the_first_tokens_log_probabilities():
    assert yes_share([(" Yes", -0.1), ("No", -2.5), ("yes", -3.0)]) == pytest.approx(
        (0.9048 + 0.0498) / (0.9048 + 0.0498 + 0.0821), abs=1e-3)
    assert yes_share([("Maybe", -0.1)]) is None


def test_an_endpoint_without_log_probabilities_is_an_error_that_says_how_to_fix_it():
    llm = OpenAICompatLLM(base_url="http://127.0.0.1:9/v1", model="m", api_key=None, context_window=4096)
    reply = SimpleNamespace(choices=[SimpleNamespace(logprobs=None)])
    llm.client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=lambda **kw: reply)))
    with pytest.raises(LLMError, match="GUIDES_ANSWER_CHECK=off"):
        llm.yes_probability(check_messages("a", "b"))


def test_a_backend_without_the_check_is_refused_up_front():
    class Plain:
        name = "plain"
    with pytest.raises(ValueError, match="GUIDES_ANSWER_CHECK=off"):
        AnswerCheck(Plain(), threshold=0.5)


@pytest.mark.slow
def test_the_bundled_model_rejects_wrong_sentences_and_keeps_right_ones():
    """Labelled sentences the 1.5B separates by a wide margin in the tuning run (answer/MEASUREMENTS.md)."""
    from core.llm import load_llm

    rows = {r["id"]: r for r in map(json.loads, LABELS.read_text().splitlines())}
    llm = load_llm(Settings(answer_check="llm"))
    try:
        check = AnswerCheck(llm, threshold=Settings().answer_check_threshold)
        p = {i: check.p_supported(rows[i]["sentence"], rows[i]["passage"])
             for i in ("c-paged-32", "c-mlm-25", "c-paged-right", "c-lora-right")}
    finally:
        llm.close()
    assert rows["c-paged-32"]["label"] == rows["c-mlm-25"]["label"] == "wrong"
    assert p["c-paged-32"] < check.threshold and p["c-mlm-25"] < check.threshold, p
    assert p["c-paged-right"] >= check.threshold and p["c-lora-right"] >= check.threshold, p


@pytest.mark.slow
def test_the_check_runs_in_its_own_slot_and_leaves_the_answer_prompt_cached():
    """llama.cpp with two slots: the answer's prompt (slot 0) is still cached after a check (slot 1)."""
    from answer.prompt import SYSTEM_PROMPT
    from core.llm import load_llm

    llm = load_llm(Settings(answer_check="llm"))
    assert llm.slots == 2 and load_llm(Settings()).slots == 1          # the second slot only with the check
    try:
        llm.start()
        answer = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Question: What is LoRA?"}]

        def prefilled(messages, slot):
            r = llm._http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1, "temperature": 0,
                                                             "id_slot": slot}, timeout=120)
            r.raise_for_status()
            return r.json()["timings"]["prompt_n"]        # prompt tokens computed, not taken from the cache

        first = prefilled(answer, 0)
        assert prefilled(check_messages("LoRA trains low-rank matrices.", "LoRA trains two low-rank matrices."),
                         CHECK_SLOT) > 10
        again = prefilled(answer, 0)
    finally:
        llm.close()
    assert first > 50 and again <= 2, (first, again)
