"""The answer check: an LLM reads each lexically verified sentence against its cited passage.

The span verifier (``answer.verify``) accepts a sentence whose words line up with one span of the
passage and whose numbers and names are the span's. It cannot see a claim the words do not carry:
"not artifacts" where the passage says "an artifact", "more hardware" where it says fewer GPUs,
"0.1-0.5% of quality" where 0.1-0.5% is the share of parameters. So a sentence stays *verified*
only when a second reader agrees: the LLM is asked, in a prompt of its own, whether every claim of
the sentence is stated in the passage, and the probability it gives "yes" (from the first token's
log-probabilities) must reach ``answer_check_threshold``. Below it the sentence becomes *not
verified*, with the reason shown to the user.

Measured on the hand-labelled sentences of ``tests/answer/fixtures/verifier_labels.jsonl`` (answers
to tune-part questions) with the bundled 1.5B: wrong sentences the span verifier accepts fall from
8 of 29 to 3, right ones kept 46 of 49 (answer/MEASUREMENTS.md, where the threshold was chosen).
On whole dev-set answers it demoted more right answers than wrong ones and left verified precision
unchanged, so it is off by default (``GUIDES_ANSWER_CHECK=llm`` turns it on).
On the llama.cpp backend the check runs in its own server slot, so it does not evict the answering
prompt's cache. Each check costs one prefill of the passage (~200 tokens, ~3.5 s on 2 cores):
it runs after the answer has streamed, while the user reads it.

Example::

    check = AnswerCheck(llm, threshold=0.65)
    p = check.p_supported("Mixtral has 8 active parameters.", passage_text)   # 0.31
    check.apply(cited, passages)       # demotes verified supports below the threshold, returns the calls
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from answer.citations import CitedAnswer
from answer.prompt import ANSWER_PREFILL, Passage, render_passage_text
from answer.verify import UNVERIFIED, VERIFIED

CHECK_SYSTEM = "You check statements against a passage. Reply with yes or no only."
CHECK_TEMPLATE = ("Passage:\n{passage}\n\nStatement: {sentence}\n\nIs every claim of the statement (each name, "
                  "number, comparison and relation) stated in the passage? Answer yes or no.")
CHECK_SLOT = 1          # llama.cpp: slot 0 answers, slot 1 checks


@dataclass
class CheckCall:
    """One sentence checked against one passage."""
    n: int
    sentence: str
    p_yes: float | None

    def to_json(self) -> dict:
        return {"n": self.n, "sentence": self.sentence,
                "p_yes": None if self.p_yes is None else round(self.p_yes, 3)}


def check_messages(sentence: str, passage: str) -> list[dict]:
    """The check prompt: the passage first (its prefix is reused when two sentences cite it), then the sentence."""
    s = sentence.strip()
    if s.startswith(ANSWER_PREFILL):
        s = s[len(ANSWER_PREFILL):].strip()
        s = s[:1].upper() + s[1:]
    return [{"role": "system", "content": CHECK_SYSTEM},
            {"role": "user", "content": CHECK_TEMPLATE.format(passage=render_passage_text(passage), sentence=s)}]


class AnswerCheck:
    """Demotes verified sentences the LLM does not find stated in their cited passage."""

    def __init__(self, llm, *, threshold: float):
        if not hasattr(llm, "yes_probability"):
            raise ValueError(f"The LLM backend {getattr(llm, 'name', llm)!r} cannot run the answer check "
                             f"(no yes_probability); set GUIDES_ANSWER_CHECK=off.")
        self.llm = llm
        self.threshold = threshold

    def p_supported(self, sentence: str, passage: str) -> float | None:
        return self.llm.yes_probability(check_messages(sentence, passage), slot=CHECK_SLOT)

    def apply(self, cited: CitedAnswer, passages: Sequence[Passage]) -> list[CheckCall]:
        """Check every verified support of ``cited`` against its whole passage (what the span came from) and
        demote those below the threshold, in place; the calls made, in order."""
        by_n = {p.n: p for p in passages}
        calls: list[CheckCall] = []
        for c in cited.citations:
            p = by_n.get(c.n)
            for s in c.supports:
                if s.status != VERIFIED or p is None:
                    continue
                prob = self.p_supported(s.sentence, p.hit.text)
                s.check = prob
                calls.append(CheckCall(n=c.n, sentence=s.sentence, p_yes=prob))
                if prob is None:
                    s.status = UNVERIFIED
                    s.reasons.append("the answer check got no yes/no from the model")
                elif prob < self.threshold:
                    s.status = UNVERIFIED
                    s.reasons.append(f"the answer check does not find every claim of it in the passage "
                                     f"(the model says yes with p={prob:.2f}, below {self.threshold:.2f})")
        return calls
