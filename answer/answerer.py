"""The answering stage: refusal gate, evidence sentences, prompt, streamed generation, cited result.

The whole turn (rewrite the follow-up, retrieve, rerank, answer) is ``pipeline.qa.Pipeline.ask_stream``,
which the CLI, the app and eval use; the answerer is its last stage.

Example::

    turns = ["What is QLoRA?", "How much memory does it need?"]
    rw = pipe.rewrite(turns)                         # the follow-up made standalone
    hits, _ = pipe.ranked(rw.query)
    answerer = Answerer(settings, llm=load_llm(settings), embedder=pipe.embedder)
    for event in answerer.stream(turns[-1], hits, history=turns[:-1], rewrite=rw):
        if isinstance(event, Token):
            print(event.text, end="", flush=True)      # raw model text, as it arrives
        else:
            result = event                             # AnswerResult: cited answer, citations, refused, ...
    print(result.to_json()["answer"])

The streamed tokens are the model's raw words; ``AnswerResult.answer`` is the final text with
citation markers attached (or the refusal), which a UI shows once the stream ends.
"""

from __future__ import annotations

import os
import platform
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from answer.budget import (OVERHEAD_TOKENS, SPEED_FILE, EvidenceBudget, fixed_budget, remembered_prefill,
                           size_budget)
from answer.check import AnswerCheck, CheckCall
from answer.citations import Citation, attribute, short_answer_grounded, strip_echoed_headers
from answer.completeness import asked_parts, missing_parts
from answer.evidence import (Quote, best_evidence, is_statement, quote_coverage, score_sentences, select_sentences,
                             span_lines)
from core.llm import LLM, count_messages_tokens
from answer.prompt import (ANSWER_PREFILL, NOT_COVERED, SYSTEM_PROMPT, Dropped, Passage, PromptTooLong,
                           build_prompt, check_injection, passage_has_injection)
from answer.refusal import RefusalGate, model_declined, refusal_text
from answer.rewrite import Rewrite
from answer.verify import CONTRADICTED, TOO_SHORT, UNVERIFIED, VERIFIED
from core.settings import Settings
from core.types import Hit
from ingest.embed import CachedEmbedder

# The answer's state when every sentence verifies but it leaves out a part of the question (_flag_incomplete).
INCOMPLETE = "incomplete"
# Every sentence verifies and no part of the question is left out, but the answer states little of its best
# evidence: not a warning (such answers are right about half the time), not "verified" either.
PARTIAL = "partial"

# What each answer state (AnswerResult.status) tells the reader, shown under the answer by the app and `guides ask`.
ANSWER_STATES = {
    VERIFIED: "verified: every sentence is stated by the passage it cites",
    INCOMPLETE: "may be incomplete: every sentence is verified, but the answer leaves out part of the question",
    PARTIAL: "supported: every sentence is stated by the guides, which say more on this (marked \u201cnot in the "
             "answer\u201d below)",
    UNVERIFIED: "not verified: a sentence is not stated by the passage it cites (see the evidence)",
    CONTRADICTED: "contradicted: a cited passage says otherwise (see the evidence)",
    TOO_SHORT: "too short to check: compare it with the passage",
}


def describe_status(status: str, missing_parts: Sequence[str] = ()) -> str:
    """The line under an answer (app and `guides ask`): its state, and for an incomplete one what it leaves out."""
    if status == INCOMPLETE and missing_parts:
        return ("may be incomplete: every sentence is verified, but the answer does not say "
                + "; ".join(f"\u201c{p}\u201d" for p in missing_parts))
    return ANSWER_STATES.get(status, status)


def quote_entry(p: Passage, start: int, end: int) -> dict:
    """A quote of passage ``p`` (its text[start:end]) as the app and the CLI show it under an answer: [n], guide ›
    section, guide file and line range."""
    return {"n": p.n, "chunk_id": p.chunk_id, "header": p.header, "guide": p.hit.payload.get("guide"),
            "section": p.hit.payload.get("section"), "lines": list(span_lines(p.hit, start, end)),
            "quote": p.hit.text[start:end].strip()}


@dataclass
class Token:
    """A piece of the model's reply as it streams."""
    text: str


@dataclass
class Evidence:
    """The guides' sentence that best matches the question, sent before the model starts writing."""
    quote: Quote
    header: str

    def to_json(self) -> dict:
        return {"header": self.header, **self.quote.to_json()}


@dataclass
class Checking:
    """The answer has been written; its verified sentences are now being checked (``answer.check``)."""
    sentences: int


# The measured evidence budget, once per model object (every Answerer over the same LLM shares it).
_BUDGETS: "weakref.WeakKeyDictionary[object, tuple[tuple, EvidenceBudget]]" = weakref.WeakKeyDictionary()
_BUDGET_LOCK = threading.Lock()


@dataclass
class AnswerResult:
    question: str
    answer: str                                   # final text: [n] markers attached, or the refusal
    citations: list[Citation]
    refused: bool
    refusal_reason: str | None = None
    rewritten_query: str | None = None            # set when a follow-up was rewritten
    question_asked: str | None = None             # what the LLM was asked: injection removed, follow-up rewritten
    rewrite_method: str = "none"
    passages: list[Passage] = field(default_factory=list)    # the passages the LLM saw, [n] -> hit
    dropped_passages: list[Dropped] = field(default_factory=list)
    prompt_tokens: int = 0
    raw_answer: str = ""                          # the model's own text
    warnings: list[str] = field(default_factory=list)
    signals: dict = field(default_factory=dict)   # refusal-gate inputs (max_cosine, missing_entities, ...)
    timings_ms: dict = field(default_factory=dict)
    status: str = "unverified"                    # verified | incomplete | unverified | contradicted | too_short | refused
    first_quote: Evidence | None = None           # shown while the model wrote
    stopped_loop: bool = False                    # generation was cut because it repeated itself
    checks: list[CheckCall] = field(default_factory=list)    # the answer check's calls (answer.check)
    span_status: str | None = None                # the status the span verifier alone gave, before the check
    coverage: float | None = None                 # share of the best evidence sentences' words the answer states
    left_out: list[dict] = field(default_factory=list)   # best evidence sentences an INCOMPLETE answer leaves out
    missing_parts: list[str] = field(default_factory=list)   # the parts of the question an INCOMPLETE answer leaves out
    evidence_budget: EvidenceBudget | None = None        # the evidence tokens the model could read, and why

    @property
    def evidence(self) -> list[dict]:
        """The passages' sentences each cited sentence aligned with, once each, in citation order:
        guide › section, line range, the quote, and whether it verified the sentence."""
        out, seen = [], set()
        by_n = {p.n: p for p in self.passages}
        for c in self.citations:
            p = by_n.get(c.n)
            for sup in c.supports:
                if p is None or not sup.span or (c.n, sup.span_start) in seen:
                    continue
                seen.add((c.n, sup.span_start))
                out.append({**quote_entry(p, sup.span_start, sup.span_end), "status": sup.status, "reasons": sup.reasons})
        return out

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "refused": self.refused,
            "refusal_reason": self.refusal_reason,
            "rewritten_query": self.rewritten_query,
            "rewrite_method": self.rewrite_method,
            "question_asked": self.question_asked,
            "citations": [c.to_json() for c in self.citations],
            "passages": [p.to_json() for p in self.passages],
            "dropped_passages": [d.to_json() for d in self.dropped_passages],
            "prompt_tokens": self.prompt_tokens,
            "raw_answer": self.raw_answer,
            "warnings": self.warnings,
            "status": self.status,
            "evidence": self.evidence,
            "first_quote": self.first_quote.to_json() if self.first_quote else None,
            "stopped_loop": self.stopped_loop,
            "checks": [c.to_json() for c in self.checks],
            "span_status": self.span_status,
            "coverage": None if self.coverage is None else round(self.coverage, 3),
            "left_out": self.left_out,
            "missing_parts": self.missing_parts,
            "evidence_budget": self.evidence_budget.to_json() if self.evidence_budget else None,
            "signals": self.signals,
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }


Event = Token | Evidence | Checking | AnswerResult


def find_loop(text: str, n: int) -> int | None:
    """Where a repetition loop's first repeat starts (a character offset), when the last ``n`` words already
    occurred earlier in ``text``; None otherwise. The text before the offset keeps one copy of the loop."""
    words = [w.group(0).casefold() for w in re.finditer(r"\S+", text)]
    starts = [w.start() for w in re.finditer(r"\S+", text)]
    if len(words) < 2 * n:
        return None
    tail = words[-n:]
    for i in range(len(words) - 2 * n, -1, -1):          # the nearest earlier copy gives the loop's period
        if words[i:i + n] == tail:
            period = len(words) - n - i
            m = len(words) - 1
            while m - period >= 0 and words[m] == words[m - period]:
                m -= 1
            return starts[m + 1] if m + 1 < len(words) else None
    return None


class Answerer:
    """Cited answers from retrieved hits with an injected LLM; settings give the defaults."""

    def __init__(self, settings: Settings, *, llm: LLM, embedder=None, gate: RefusalGate | None = None):
        self.settings = settings
        self.llm = llm
        self.embedder = CachedEmbedder(embedder) if embedder is not None else None   # sentences recur across questions
        self.gate = gate or RefusalGate(embedder=self.embedder, min_cosine=settings.refuse_min_cosine,
                                        entity_cosine=settings.refuse_entity_cosine,
                                        min_rerank=settings.refuse_min_rerank, top_n=settings.answer_passages)
        if settings.citation_support != "lexical" and embedder is None:
            raise ValueError(f"citation_support={settings.citation_support!r} needs an embedder; pass embedder=.")
        self.check = AnswerCheck(llm, threshold=settings.answer_check_threshold) if settings.answer_check == "llm" else None

    # ------------------------------------------------------------------ budget
    @property
    def evidence_budget(self) -> EvidenceBudget:
        """Evidence tokens per answer: measured once per model (answer.budget), or answer_context_tokens."""
        s = self.settings
        if s.answer_context_budget == "fixed" or s.answer_context != "sentences":
            return fixed_budget(s.answer_context_tokens, "answer_context_budget=fixed" if s.answer_context_budget
                                == "fixed" else "answer_context=passages: whole passages, no sentence budget")
        with _BUDGET_LOCK:
            got = _BUDGETS.get(self.llm)
            if got is None or got[0] != (s.answer_first_token_s, s.answer_context_tokens):
                key = "|".join(str(x) for x in (s.llm, s.llm_model, s.llm_base_url, s.llm_threads, os.cpu_count(),
                                                platform.machine()))
                speed, _ = remembered_prefill(self.llm, s.data_dir / "logs" / SPEED_FILE, key)
                if speed is None:
                    b = fixed_budget(s.answer_context_tokens, f"{getattr(self.llm, 'name', 'this model')} has no "
                                     "measurable reading speed: answer_context_tokens")
                else:
                    system = count_messages_tokens(self.llm, [{"role": "system", "content": SYSTEM_PROMPT}])
                    b = size_budget(speed, target_s=s.answer_first_token_s, floor=s.answer_context_tokens,
                                    cap=self.prompt_budget - system - OVERHEAD_TOKENS)
                got = _BUDGETS[self.llm] = ((s.answer_first_token_s, s.answer_context_tokens), b)
            return got[1]

    @property
    def prompt_budget(self) -> int:
        """Hard limit on prompt tokens: the context window minus the longest answer."""
        return self.llm.context_window - self.settings.llm_max_answer_tokens

    @property
    def latency_budget(self) -> int | None:
        """Soft limit on prompt tokens: settings.answer_prompt_tokens, else the backend's default."""
        if self.settings.answer_prompt_tokens is not None:
            return self.settings.answer_prompt_tokens
        base = getattr(self.llm, "default_prompt_budget", None)
        if base is None:
            return None
        # a measured evidence budget above the floor widens the latency cap by as much
        return base + max(0, self.evidence_budget.tokens - self.settings.answer_context_tokens)

    # ------------------------------------------------------------------ answering
    def stream(self, question: str, hits: Sequence[Hit], *, history: Sequence[str] = (),
               rewrite: Rewrite | None = None, max_tokens: int | None = None,
               temperature: float | None = None) -> Iterator[Event]:
        """Yield Token events while the model writes, then one AnswerResult."""
        t0 = time.perf_counter()
        s = self.settings
        timings: dict[str, float] = {}
        if rewrite is not None and rewrite.ms:
            timings["rewrite"] = rewrite.ms
        inj = check_injection(question)
        warnings = [inj.warning] if inj.warning else []
        hits = list(hits)
        result = AnswerResult(question=question, answer="", citations=[], refused=False, warnings=warnings)
        if rewrite is not None and rewrite.changed:
            result.rewritten_query, result.rewrite_method = rewrite.query, rewrite.method

        def refuse(reason: str, *, model_text: str = "", after_generation: bool = False) -> AnswerResult:
            result.refused, result.refusal_reason, result.status = True, reason, "refused"
            result.answer = refusal_text(hits, reason=None, after_generation=after_generation)
            result.raw_answer = model_text
            result.citations = []
            timings["total"] = (time.perf_counter() - t0) * 1000
            result.timings_ms = timings
            return result

        if not inj.question:
            res = refuse("the question holds only instructions to the assistant, no question about the guides")
            yield Token(res.answer)
            yield res
            return
        asked = rewrite.query if rewrite is not None and rewrite.changed else inj.question
        result.question_asked = asked

        t_gate = time.perf_counter()
        verdict = self.gate.check(asked, hits)
        timings["gate"] = (time.perf_counter() - t_gate) * 1000
        result.signals = verdict.signals
        if verdict.refuse:
            res = refuse(verdict.reason)
            yield Token(res.answer)
            yield res
            return

        budget = result.evidence_budget = self.evidence_budget     # measured once per model, before the clock
        t_sel = time.perf_counter()
        top = hits[:s.answer_passages]
        excerpts = None
        if s.answer_context == "sentences":
            sel = select_sentences(asked, top, count_tokens=self.llm.count_tokens,
                                   budget_tokens=budget.tokens, embedder=self.embedder)
            excerpts, best, lead = sel.excerpts, sel.best, sel.quotes
        else:
            lead = score_sentences(asked, top[:1], embedder=self.embedder)
            best = lead[0] if lead else None
        timings["select"] = (time.perf_counter() - t_sel) * 1000
        best = next((q for q in lead if is_statement(q.text)), best)     # shown first: a statement, not a heading
        if best is not None:
            from answer.prompt import passage_header

            result.first_quote = Evidence(quote=best, header=passage_header(best.hit))
            yield result.first_quote

        prefill = ANSWER_PREFILL if getattr(self.llm, "supports_prefill", False) else ""
        try:
            prompt = build_prompt(asked, hits, llm=self.llm, max_passages=s.answer_passages,
                                  budget_tokens=self.prompt_budget, soft_budget_tokens=self.latency_budget,
                                  order=s.answer_passage_order,
                                  history=history if result.rewritten_query is None else (), prefill=prefill,
                                  excerpts=excerpts, header=s.answer_header)
        except PromptTooLong as e:
            res = refuse(str(e))
            yield Token(res.answer)
            yield res
            return
        result.passages, result.dropped_passages, result.prompt_tokens = prompt.passages, prompt.dropped, prompt.prompt_tokens
        if prompt.dropped:
            budget = min(b for b in (prompt.budget_tokens, prompt.soft_budget_tokens) if b is not None)
            result.warnings.append(f"{len(prompt.dropped)} passage(s) left out to fit the prompt budget of "
                                   f"{budget} tokens: " + ", ".join(d.hit.chunk_id for d in prompt.dropped))
        if not prompt.passages:
            res = refuse("no passage fits the prompt budget")
            yield Token(res.answer)
            yield res
            return
        flagged = [p.n for p in prompt.passages if passage_has_injection(p.hit.text)]
        if flagged:
            result.signals["passages_with_instructions"] = flagged

        t_gen = time.perf_counter()
        pieces: list[str] = []
        stream = self.llm.stream(prompt.messages, max_tokens=max_tokens or s.llm_max_answer_tokens,
                                 temperature=s.llm_temperature if temperature is None else temperature)
        try:
            for piece in stream:
                if not pieces:
                    timings["first_token"] = (time.perf_counter() - t0) * 1000    # the model's own first token
                    piece = prefill + piece
                pieces.append(piece)
                yield Token(piece)
                if len(pieces) % 4 == 0 and (cut := find_loop("".join(pieces), s.answer_loop_ngram)) is not None:
                    pieces = ["".join(pieces)[:cut]]
                    result.stopped_loop = True
                    result.warnings.append("the model started repeating itself; the repetition was cut")
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        timings["generate"] = (time.perf_counter() - t_gen) * 1000
        raw = "".join(pieces).strip()
        text = strip_echoed_headers(raw, prompt.passages)

        if model_declined(text):
            res = refuse("the model found no answer in the passages", model_text=raw)
            yield res
            return
        t_cite = time.perf_counter()
        cited = attribute(text, prompt.passages, threshold=s.citation_threshold, embedder=self.embedder,
                          mode=s.citation_support, skip=(NOT_COVERED,), question=asked)
        timings["cite"] = (time.perf_counter() - t_cite) * 1000
        # Refuse when no sentence is about the passages at all. A sentence whose words match but whose
        # figures do not stays in the answer, marked not verified with the numbers named: refusing it
        # would tell the user the guides don't cover a topic they do cover.
        if s.refuse_unsupported and cited.n_supported == 0 and cited.n_checkable > 0:
            res = refuse("no sentence of the model's answer is supported by the passages", model_text=raw,
                         after_generation=True)
            yield res
            return
        if s.refuse_unsupported and cited.n_checkable == 0 and not short_answer_grounded(
                cited.too_short, [p for p in prompt.passages if p.n not in flagged]):
            res = refuse("the model's short answer is not in the passages", model_text=raw, after_generation=True)
            yield res
            return
        if cited.removed_markers:
            result.warnings.append("removed citation markers that point to no passage: "
                                   + ", ".join(f"[{n}]" for n in cited.removed_markers))
        result.span_status = cited.status
        if self.check is not None and cited.n_verified:
            yield Checking(sentences=cited.n_verified)
            t_check = time.perf_counter()
            result.checks = self.check.apply(cited, prompt.passages)
            timings["check"] = (time.perf_counter() - t_check) * 1000
        result.answer, result.citations, result.raw_answer = cited.text, cited.citations, raw
        result.status = cited.status
        self._flag_incomplete(result, lead, prompt.passages, asked, cited)
        timings["total"] = (time.perf_counter() - t0) * 1000
        result.timings_ms = timings
        yield result

    def _flag_incomplete(self, result: AnswerResult, lead: Sequence[Quote], passages: Sequence[Passage],
                         asked: str, cited) -> None:
        """A verified answer that leaves out a part of the question (answer.completeness) becomes INCOMPLETE,
        naming the parts in ``result.missing_parts``; one that answers every part but states less than
        ``answer_min_coverage`` of its best evidence's words becomes PARTIAL (no warning, but not shown
        verified: about half of them are wrong). Both keep the best evidence they do not state in
        ``result.left_out``. ``answer_incomplete="coverage"``: INCOMPLETE by coverage alone (the rule before)."""
        s = self.settings
        top = best_evidence(lead, s.answer_coverage_quotes)
        covs = quote_coverage(result.answer, top, asked) if top else []
        result.coverage = sum(covs) / len(covs) if covs else None
        if result.status != VERIFIED or s.answer_incomplete == "off":
            return
        low = result.coverage is not None and result.coverage < s.answer_min_coverage
        if s.answer_incomplete == "coverage":
            if not low:
                return
            result.status = INCOMPLETE
        else:
            verified = [sup.sentence for c in cited.citations for sup in c.supports if sup.status == VERIFIED]
            missing = missing_parts(asked_parts(asked), list(dict.fromkeys(verified)))
            if missing:
                result.missing_parts = [p.describe() for p in missing]
                result.status = INCOMPLETE
            elif low:
                result.status = PARTIAL
            else:
                return
        by_chunk = {p.chunk_id: p for p in passages}
        shown = {" ".join(e["quote"].split()) for e in result.evidence}    # each quote once under an answer
        for q, c in zip(top, covs):
            p = by_chunk.get(q.hit.chunk_id)
            if c < s.answer_min_coverage and p is not None:
                entry = quote_entry(p, q.start, q.end)
                if " ".join(entry["quote"].split()) not in shown:
                    shown.add(" ".join(entry["quote"].split()))
                    result.left_out.append({**entry, "coverage": round(c, 3)})

    def answer(self, question: str, hits: Sequence[Hit], **kw) -> AnswerResult:
        """The AnswerResult without streaming."""
        return _last(self.stream(question, hits, **kw))


def _last(events: Iterator[Event]) -> AnswerResult:
    res = None
    for ev in events:
        res = ev
    assert isinstance(res, AnswerResult)
    return res
