"""Turn a follow-up into a standalone question before retrieval.

Methods (settings.rewrite): ``heuristic`` adds the topic words of the previous turn to a
follow-up that leans on it (pronouns such as "it", "that", "those", "the same", or a very short
question); ``llm`` asks the LLM for a standalone question and falls back to the heuristic, saying
so in ``Rewrite.method``, when the reply is unusable; ``off`` leaves the question as it is.

Example::

    rw = Rewriter("heuristic")
    rw.rewrite("How much memory does it save?", ["What is QLoRA?"]).query
    # 'How much memory does it save? (QLoRA)'
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Sequence

from core.llm import LLM, complete
from core.text import (ANAPHORA, CONVERSATIONAL_WORDS, FOLLOW_UP_LEADS, QUESTION_SCAFFOLD, STOPWORDS, content_stems,
                       terms)

METHODS = ("heuristic", "llm", "off")

# Words of an earlier turn that name no topic, compared as whole words (see core.text.CONVERSATIONAL_WORDS).
_NO_TOPIC = STOPWORDS | QUESTION_SCAFFOLD | CONVERSATIONAL_WORDS | ANAPHORA


def needs_context(question: str, min_content_words: int = 3) -> bool:
    """A question that points back ('it', 'those', 'the same') or is too short to stand alone."""
    low = question.lower().strip()
    words = [w.lower() for w in terms(question)]
    if any(w in ANAPHORA for w in words) or low.startswith(FOLLOW_UP_LEADS):
        return True
    return len(content_stems(question)) < min_content_words


def topic_terms(turn: str, *, exclude: Sequence[str] = (), limit: int = 8) -> list[str]:
    """Content words of ``turn`` in their original form and order, minus scaffolding and ``exclude`` (stems)."""
    skip = set(exclude)
    out: list[str] = []
    for w in terms(turn):
        low = w.lower()
        if low in _NO_TOPIC or (len(low) < 2 and not low.isdigit()):
            continue
        stems = content_stems(w)
        if not stems or set(stems) <= skip:
            continue
        skip.update(stems)
        out.append(w)
        if len(out) >= limit:
            break
    return out


def heuristic_rewrite(question: str, history: Sequence[str], *, max_terms: int = 2) -> str:
    """``question`` plus, in brackets, the first ``max_terms`` topic words of the latest earlier turn.

    Few words on purpose: the follow-up's own words should dominate retrieval; on the dev set's
    follow-ups, 2 words gave MRR@10 0.77, 8 words 0.58, no rewrite 0.69 (answer/MEASUREMENTS.md).
    """
    if not history or not needs_context(question) or max_terms < 1:
        return question
    have = content_stems(question)
    found: list[str] = []
    for turn in reversed(history):          # the latest earlier turn that names a topic
        found = topic_terms(turn, exclude=have, limit=max_terms)
        if found:
            break
    if not found:
        return question
    return f"{question} ({' '.join(found)})"


REWRITE_SYSTEM = (
    "You rewrite the last question of a conversation so that it can be understood on its own. "
    "Replace words like 'it', 'that' or 'those' with what they refer to in the earlier questions. "
    "Keep the meaning; do not answer. Reply with the rewritten question only, on one line."
)
_EXAMPLE_USER = ("Earlier questions:\n1. What is beam search?\nLast question: How does it differ from greedy decoding?\n"
                 "Standalone question:")
_EXAMPLE_ASSISTANT = "How does beam search differ from greedy decoding?"


def llm_messages(question: str, history: Sequence[str]) -> list[dict]:
    earlier = "\n".join(f"{i}. {t}" for i, t in enumerate(history, start=1))
    return [
        {"role": "system", "content": REWRITE_SYSTEM},
        {"role": "user", "content": _EXAMPLE_USER},
        {"role": "assistant", "content": _EXAMPLE_ASSISTANT},
        {"role": "user", "content": f"Earlier questions:\n{earlier}\nLast question: {question}\nStandalone question:"},
    ]


def clean_llm_rewrite(reply: str, question: str, history: Sequence[str] = ()) -> str | None:
    """The rewritten question, or None if the reply is not a usable rewrite of ``question``.

    Unusable: empty or rambling, the follow-up unchanged, a copy of an earlier turn (the 0.5B
    model often returns one of those), or missing most of the follow-up's own content words.
    """
    line = next((l.strip() for l in reply.strip().splitlines() if l.strip()), "")
    line = re.sub(r"^(standalone question|rewritten question|question)\s*:\s*", "", line, flags=re.I).strip().strip('"“”')
    if not line or len(line) > 2 * len(question) + 120 or len(line) < 8:
        return None
    norm = lambda t: " ".join(content_stems(t))
    if norm(line) == norm(question) or any(norm(line) == norm(h) for h in history):
        return None             # unchanged, or a copy of an earlier turn: nothing was resolved
    own = set(content_stems(question))
    if own and len(own & set(content_stems(line))) < 0.5 * len(own):
        return None
    return line


@dataclass
class Rewrite:
    query: str             # what to search with (and ask the LLM)
    method: str            # "none", "heuristic", "llm", or "heuristic (llm reply unusable)"
    ms: float = 0.0

    @property
    def changed(self) -> bool:
        return self.method != "none"


class Rewriter:
    """Standalone questions for retrieval; ``method`` from settings.rewrite."""

    def __init__(self, method: str = "heuristic", *, llm: LLM | None = None, max_tokens: int = 64):
        if method not in METHODS:
            raise ValueError(f"Unknown rewrite method {method!r} (setting GUIDES_REWRITE). Supported methods are: {list(METHODS)}")
        if method == "llm" and llm is None:
            raise ValueError("Rewrite method 'llm' needs an LLM: pass llm=.")
        self.method = method
        self.llm = llm
        self.max_tokens = max_tokens

    def rewrite(self, question: str, history: Sequence[str] = ()) -> Rewrite:
        t0 = time.perf_counter()
        history = [h for h in history if h and h.strip()]
        if self.method == "off" or not history:
            return Rewrite(question, "none", 0.0)
        if self.method == "heuristic":
            q = heuristic_rewrite(question, history)
            return Rewrite(q, "heuristic" if q != question else "none", (time.perf_counter() - t0) * 1000)
        if not needs_context(question):
            return Rewrite(question, "none", (time.perf_counter() - t0) * 1000)
        reply = complete(self.llm, llm_messages(question, history), max_tokens=self.max_tokens, temperature=0.0,
                         stop=["\n"])
        q = clean_llm_rewrite(reply, question, history)
        if q is None:
            q = heuristic_rewrite(question, history)
            return Rewrite(q, "heuristic (llm reply unusable)", (time.perf_counter() - t0) * 1000)
        return Rewrite(q, "llm", (time.perf_counter() - t0) * 1000)
