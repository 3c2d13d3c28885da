"""The grader on the hand-labelled fixture, and on the answers a person may give."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.bank import Entry, Point, bank_from_folder
from practice.grade import grade
from practice.measure import judgements, load_fixture, scores

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bank() -> dict[str, Entry]:
    return {e.id: e for e in bank_from_folder(REPO / "data" / "guides")}


def entry(*points: str) -> Entry:
    return Entry(id="q", question="What is LoRA and why use it?", guide="g.md", section="G › Fine-tuning",
                 question_lines=(1, 1), answer_lines=(2, 1 + len(points)), reference="\n".join(points),
                 points=[Point(t, (2 + i, 2 + i), "item") for i, t in enumerate(points)])


LORA = entry("Problem: Full fine-tuning updates all parameters, which is expensive in memory.",
             "LoRA Solution: Freezes the pre-trained weights and injects trainable rank decomposition matrices.",
             "Benefit: Reduces the number of trainable parameters by 10,000x and GPU memory requirement by 3x.")


def test_the_fixture_is_big_and_varied_enough():
    rows = load_fixture()
    assert sum(len(r["labels"]) for r in rows) >= 150 and len({r["id"] for r in rows}) >= 25
    assert {"paraphrase", "partial", "wrong_number", "wrong_name", "neighbour", "offtopic", "bullets"} <= {
        r["kind"] for r in rows}


def test_covered_f1_on_the_test_part_meets_the_target(bank):
    js, _ = judgements(load_fixture(), bank, lambda e, a: grade(e, a))
    test = scores(js, "test")
    assert test["covered_f1"] >= 0.85, test
    assert test["false_contradictions"] <= 1 and test["contradictions_caught"] >= test["contradictions"] // 2, test


def test_a_wrong_number_is_a_contradiction_that_names_the_guides_figure():
    g = grade(LORA, "LoRA freezes the pretrained weights and trains rank decomposition matrices. "
                    "It reduces trainable parameters by 100x and GPU memory by 3x.")
    assert [p.state for p in g.points] == ["missed", "covered", "contradicted"]
    assert g.points[2].reason == "the guide says 10,000x, not 100x"
    assert g.score == 0.0                                  # (1 covered - 1 contradicted) / 3


def test_swapped_roles_are_contradictions():
    e = entry("RLHF: train a reward model from preferences, then use PPO to optimize the policy against it.",
              "DPO: directly optimize preference data as a classification loss, no reward model needed.")
    g = grade(e, "DPO trains a reward model and uses PPO, while RLHF optimizes preferences directly as a "
                 "classification loss without a reward model.")
    assert [p.state for p in g.points] == ["contradicted", "contradicted"]
    assert g.points[1].reason == "the guide says this of RLHF, not DPO"


@pytest.mark.parametrize("answer,note", [("", "empty answer"), ("   \n ", "empty answer"),
                                         ("I don't know.", "the answer says it does not know"),
                                         ("no idea", "the answer says it does not know")])
def test_empty_and_dont_know_score_zero_with_every_point_missed(answer, note):
    g = grade(LORA, answer)
    assert g.score == 0 and len(g.missed) == 3 and g.note == note


def test_off_topic_and_other_question_answers_cover_nothing():
    assert grade(LORA, "Bananas ripen faster next to apples because of ethylene.").score == 0
    assert grade(LORA, "Beam search keeps the top-k most promising sequences while decoding.").score == 0


def test_bullets_and_a_very_long_answer():
    g = grade(LORA, "- full fine-tuning updates all parameters, expensive memory\n- freezes pre-trained weights, "
                    "injects trainable rank decomposition matrices\n- 10,000x fewer trainable parameters, 3x less GPU memory")
    assert g.score == 1.0
    long = grade(LORA, "LoRA freezes the pre-trained weights. " * 5000)
    assert long.note and "cut" in long.note and [p.state for p in long.points][1] == "covered"


def test_json_contract():
    j = grade(LORA, "LoRA freezes the pre-trained weights and injects rank decomposition matrices.").to_json()
    assert set(j) >= {"id", "score", "covered", "missed", "contradicted", "reference"}
    assert j["covered"][0] == {"text": LORA.points[1].text, "lines": [3, 3]} and 0 < j["score"] < 1


def test_feedback_is_asked_only_for_missed_points_and_from_the_guides_text():
    from core.llm import FakeLLM
    from practice.feedback import feedback

    llm = FakeLLM({"tell the student": "Add that LoRA cuts trainable parameters by 10,000x."})
    g = grade(LORA, "LoRA freezes the pre-trained weights and injects rank decomposition matrices.")
    assert feedback(llm, g) == "Add that LoRA cuts trainable parameters by 10,000x."
    prompt = llm.calls[0]["messages"][1]["content"]
    assert "10,000x" in prompt and "Problem:" in prompt and LORA.points[1].text not in prompt.split("missed")[1]
    full = grade(LORA, "- full fine-tuning updates all parameters, expensive memory\n- freezes pre-trained weights, "
                       "injects trainable rank decomposition matrices\n- 10,000x fewer trainable parameters, 3x less GPU memory")
    assert feedback(llm, full) is None and len(llm.calls) == 1          # nothing missed: no call
