"""The Practice page (AppTest): a question card, an answer graded against the guide, the next question."""

from __future__ import annotations

import json

import pytest


def practice(new_app):
    at = new_app().run()                   # the first run registers st.navigation's pages
    at.switch_page("guides_qa/ui/practice_page.py")
    return at.run()


def test_practice_round_answer_grade_next(app_env, new_app):
    data = app_env()
    at = practice(new_app)
    assert not at.exception, at.exception
    assert at.title[0].value == "Practice"
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["New"]) >= 100 and int(metrics["Due now"]) == 0
    question = next(m.value for m in at.markdown if m.value.startswith("**"))
    box = at.text_area[0]
    box.set_value("A large language model is an AI model trained on vast amounts of text data to understand and "
                  "generate human-like text.")
    next(b for b in at.button if b.label == "Grade my answer").click().run()
    assert not at.exception, at.exception
    assert at.subheader[0].value.startswith("Score ")
    shown = " ".join(m.value for m in at.markdown)
    assert "✓" in shown and ("Missed" in shown or "✗" in shown or at.subheader[0].value == "Score 100%")
    assert any("whole answer" in e.label for e in at.expander)
    next(b for b in at.button if b.label == "Next question").click().run()
    assert not at.exception, at.exception
    after = next(m.value for m in at.markdown if m.value.startswith("**"))
    assert after != question and at.text_area[0].value in ("", None)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["New"]) >= 99
    from practice.schedule import PracticeStore

    store = PracticeStore(data / "practice" / "practice.sqlite")
    hist = store.history("default")
    assert len(hist) == 1 and 0 < hist[0]["score"] <= 1


def test_practice_page_without_an_index_says_how_to_build_it(empty_env, new_app):
    at = practice(new_app)
    assert not at.exception, at.exception
    assert any("guides ingest" in w.value for w in at.warning)


def test_model_feedback_is_shown_apart_from_the_grade_when_asked_for(app_env, new_app):
    app_env(GUIDES_PRACTICE_FEEDBACK="true")
    at = practice(new_app)
    at.text_area[0].set_value("It is a model.")
    next(b for b in at.button if b.label == "Grade my answer").click().run()
    assert not at.exception, at.exception
    assert any("Feedback, written by the model" in i.value for i in at.info)
    assert at.subheader[0].value.startswith("Score ")                 # the grade stands on its own
