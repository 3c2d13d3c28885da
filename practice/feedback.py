"""Optional feedback on a practice answer, written by the LLM from the missed points and the guide's text only.

Off by default (``practice_feedback``): the grade itself needs no model. When on, the model gets the question,
the guide's reference answer, the points the person missed or contradicted, and the person's answer, and is
asked for one or two sentences on what to add or correct, using only the guide's words. The app and the CLI show
it apart from the grade, labelled as written by the model.

Example::

    print(feedback(llm, grade))
"""

from __future__ import annotations

from core.llm import LLM, complete

SYSTEM = ("You coach a student preparing for an LLM engineering interview. Use only the guide's text below: add no "
          "fact it does not state. Reply in one or two short sentences, addressed to the student.")
MAX_TOKENS = 90


def feedback_messages(grade) -> list[dict]:
    e = grade.entry
    missed = [p for p in grade.points if p.state != "covered"]
    lines = "\n".join(f"- {p.point.text}" + (f" (the student said otherwise: {p.reason})" if p.reason else "")
                      for p in missed)
    user = (f"Interview question: {e.question}\n\nThe guide's answer:\n{e.reference}\n\n"
            f"What the student's answer missed or got wrong:\n{lines}\n\nThe student's answer:\n{grade.answer}\n\n"
            "In one or two sentences, tell the student what to add or correct.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def feedback(llm: LLM, grade) -> str | None:
    """One or two sentences on what the answer missed; None when nothing was missed (no call is made)."""
    if not any(p.state != "covered" for p in grade.points) or not grade.answer.strip():
        return None
    return complete(llm, feedback_messages(grade), max_tokens=MAX_TOKENS, temperature=0.0).strip() or None
