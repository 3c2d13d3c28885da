"""Answer metrics: deterministic ones (correctness, keywords, citations, refusals) and ragas' LLM-judged ones.

Correctness (issue 9, section 4): an answer to an answerable or follow-up question is correct when it
is not refused, states every one of the question's ``answer_facts`` (some variant of each, see
``eval.golden.states``) and states no number that appears in none of the passages the model saw
(numbers as ``answer.citations.numbers`` reads them, the [n] markers and list enumerators "1." at a
line start left out). An answer to an unanswerable question is correct when it is a refusal.
Verified precision: of the answers whose citations are all verified (at least one citation, not
refused), the share that are correct. Facts on screen: the answer is not refused and every answer fact
is stated in the answer or in the guides' sentences shown under it without a click (its evidence, "The
guides also say"). It measures what the student reads, not what the model wrote: an answer can be
wrong and still have its facts on screen.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import re
import sys

from tqdm import tqdm

from answer.citations import numbers, strip_markers

from .golden import GoldenItem, missing_facts

_ENUMERATOR = re.compile(r"^[ \t]*(?:[-*•][ \t]*)?\(?\d{1,2}[.)](?=\s)", re.M)


def stated_text(answer: str) -> str:
    """The answer's words as a reader sees them: no [n] markers."""
    return "\n".join(strip_markers(line) for line in answer.split("\n"))


def unsupported_numbers(answer: str, passages: list[str]) -> list[str]:
    """Numbers the answer states that none of the passages states (list enumerators like '2.' ignored)."""
    seen = set().union(*(numbers(p) for p in passages)) if passages else set()
    return sorted(numbers(_ENUMERATOR.sub(" ", stated_text(answer))) - seen)


def facts_on_screen(item: GoldenItem, answer: str, refused: bool, shown: list[str]) -> bool | None:
    """Whether every answer fact is in the answer or in the quotes ``shown`` under it (None: unanswerable)."""
    if not item.answerable:
        return None
    return (not refused) and not missing_facts("\n".join([stated_text(answer), *shown]), item.answer_facts)


def shown_quotes(a) -> list[str]:
    """The guides' sentences shown under a finished answer without a click: its evidence rows ("From the
    guides") and the ones an incomplete answer leaves out ("The guides also say"). The quote shown while the
    model writes is gone by then."""
    return [e["quote"] for e in a.evidence] + [e["quote"] for e in a.left_out]


def judge_answer(item: GoldenItem, answer: str, refused: bool, passages: list[str], citations: list[dict],
                 status: str | None = None) -> dict:
    """Correctness of one answer: the facts it misses, the numbers no passage states, whether it is verified
    (the answer's own trust state when given: every checkable sentence verified; else every citation verified)."""
    if status is not None:
        verified = (not refused) and status == "verified"
    else:
        verified = (not refused) and bool(citations) and all(c["verified"] for c in citations)
    if not item.answerable:
        return {"correct": refused, "missing_facts": [], "unsupported_numbers": [], "fully_verified": verified}
    text = stated_text(answer)
    missing = missing_facts(text, item.answer_facts)
    extra = unsupported_numbers(answer, passages) if not refused else []
    return {"correct": (not refused) and not missing and not extra, "missing_facts": missing,
            "unsupported_numbers": extra, "fully_verified": verified}


def _kw_hits(answer: str, keywords: list[str]) -> float:
    if not keywords:
        return float("nan")
    a = answer.casefold()
    return sum(k.casefold() in a for k in keywords) / len(keywords)


def answer_record(pipe, item: GoldenItem, relevant: set[str], by_id: dict, lat: dict) -> dict:
    """Answer one golden question with the real pipeline; returns the fields for questions.jsonl."""
    res = pipe.ask(item.turns, id=item.id)
    a = res.answer
    for k, v in res.timings_ms.items():
        lat.setdefault(k, []).append(v)
    cites = [c.to_json() for c in a.citations]
    used = [p.hit for p in a.passages]
    seen = [p.hit.text + "\n" + p.header for p in a.passages]     # what the model saw, headers included
    return {
        "answer": a.answer,
        "refused": a.refused,
        "refusal_reason": a.refusal_reason,
        "rewritten_query": a.rewritten_query,
        "citations": [{"n": c["n"], "chunk_id": c["chunk_id"], "verified": c["verified"],
                       "relevant": c["chunk_id"] in relevant} for c in cites],
        "keyword_recall": _kw_hits(a.answer, item.answer_keywords) if not a.refused else 0.0,
        "all_keywords": (not a.refused) and bool(item.answer_keywords)
                        and all(k.casefold() in a.answer.casefold() for k in item.answer_keywords),
        # what the model read of each passage (its selected sentences, or the whole passage): the contexts the
        # ragas judge checks the answer against, as ragas defines them
        "used_passages": [p.text for p in a.passages],
        "used_relevant": any(h.chunk_id in relevant for h in used),
        "status": a.status,
        "span_status": a.span_status,
        "coverage": a.coverage,
        "on_screen": facts_on_screen(item, a.answer, a.refused, shown_quotes(a)),
        "checks": [c.to_json() for c in a.checks],
        **judge_answer(item, a.answer, a.refused, seen, cites, a.status),
        "timings_ms": {k: round(v, 1) for k, v in res.timings_ms.items()},
    }


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else float("nan")


def outcomes(records: list[dict]) -> dict:
    """What the project and its peer are both judged on (``deterministic_summary``, ``comparison_summary``)."""
    ans = [r for r in records if r["kind"] != "unanswerable"]
    una = [r for r in records if r["kind"] == "unanswerable"]
    return {
        "answered_questions": len(records),
        "correctness": _mean([float(r["correct"]) for r in ans]),
        "correct_answers": sum(bool(r["correct"]) for r in ans),
        "wrong_answers": wrong_answers(records),
        "refused_unanswerable": sum(bool(r["refused"]) for r in una),
        "false_refusals": sum(bool(r["refused"]) for r in ans),
    }


def deterministic_summary(records: list[dict]) -> dict:
    ans = [r for r in records if r["kind"] != "unanswerable" and "answer" in r]
    una = [r for r in records if r["kind"] == "unanswerable" and "answer" in r]
    cites = [c for r in ans for c in r["citations"]]
    verified = [r for r in ans + una if r.get("fully_verified")]
    incomplete = [r for r in ans + una if r.get("status") == "incomplete"]
    out = {
        **outcomes(ans + una),
        "verified_answers": len(verified),
        "verified_precision": _mean([float(r["correct"]) for r in verified]),
        "incomplete_answers": len(incomplete),
        "incomplete_correct": sum(bool(r["correct"]) for r in incomplete),
        "facts_on_screen": sum(bool(r.get("on_screen")) for r in ans),
        "facts_on_screen_share": _mean([float(bool(r.get("on_screen"))) for r in ans]),
        "keyword_all_share": _mean([float(r["all_keywords"]) for r in ans]),
        "keyword_recall": _mean([r["keyword_recall"] for r in ans]),
        "citation_verified_share": _mean([float(c["verified"]) for c in cites]),
        "citation_relevant_share": _mean([float(c["relevant"]) for c in cites]),
        "citations_per_answer": _mean([len(r["citations"]) for r in ans if not r["refused"]]),
        "refusal_accuracy_unanswerable": _mean([float(r["refused"]) for r in una]),
        "false_refusal_rate_answerable": _mean([float(r["refused"]) for r in ans]),
    }
    return out


def wrong_answers(records: list[dict]) -> int:
    """Answers a reader could take for right that are not: an answerable question answered (not refused) but not
    correct, or an unanswerable one answered instead of refused."""
    return sum((not r["refused"]) and (r["kind"] == "unanswerable" or not r["correct"]) for r in records)


def answer_seconds(r: dict) -> float | None:
    """One answer's total time in seconds (the project's timings, or the peer's own clock)."""
    if "seconds" in r:
        return r["seconds"]
    t = (r.get("timings_ms") or {}).get("total")
    return None if t is None else t / 1000


def comparison_summary(records: list[dict]) -> dict:
    """The figures the project and its peer are compared on, over the same questions (``eval.peer``)."""
    ans = [r for r in records if r["kind"] != "unanswerable"]
    una = [r for r in records if r["kind"] == "unanswerable"]
    secs = sorted(s for s in map(answer_seconds, records) if s is not None)
    return {
        **outcomes(records),
        "answerable": len(ans),
        "unanswerable": len(una),
        "wrong_share": _mean([float((not r["refused"]) and (r["kind"] == "unanswerable" or not r["correct"]))
                              for r in records]),
        "seconds_p50": statistics.median(secs) if secs else float("nan"),
    }


METRICS = ("faithfulness", "answer_relevancy", "context_precision")


def ragas_scores(records: list[dict], judge, embedder, *, sample: int | None = None, cache=None,
                 progress: bool = True, concurrency: int = 4) -> dict:
    """ragas' faithfulness, answer relevancy and LLM context precision (without reference) over a fixed,
    stratified sample of the judgeable answers (``eval.sample``; ``sample`` None: all of them).

    Every judgement is looked up in ``cache`` (``eval.judge_cache.JudgeCache``) first and stored there as
    soon as it is made. Judgements of different answers run ``concurrency`` at once (a local judge's
    server batches them); each answer's scores are also written to its record under "ragas"."""
    from ragas.metrics.collections import AnswerRelevancy, ContextPrecisionWithoutReference, Faithfulness

    from .judge import EmbedderAdapter
    from .judge_cache import judgement_key
    from .sample import draw_sample

    chosen, how = draw_sample(records, sample)
    faith = Faithfulness(llm=judge)
    relev = AnswerRelevancy(llm=judge, embeddings=EmbedderAdapter(embedder), strictness=1)
    cprec = ContextPrecisionWithoutReference(llm=judge)
    identity = getattr(judge, "identity", None) or getattr(judge, "name", type(judge).__name__)
    errors: dict[str, list[str]] = {k: [] for k in METRICS}
    from_cache = 0
    jobs = [(r, m) for r in chosen for m in METRICS]
    bar = tqdm(total=len(jobs), desc="Judging (ragas)", unit="judgement", disable=not progress, file=sys.stderr)

    def call(r, metric):
        q, a, ctx = r["question"], r["answer"], r["used_passages"]
        if metric == "faithfulness":
            return faith.ascore(user_input=q, response=a, retrieved_contexts=ctx)
        if metric == "answer_relevancy":
            return relev.ascore(user_input=q, response=a)
        return cprec.ascore(user_input=q, response=a, retrieved_contexts=ctx)

    async def one(r, metric, gate):
        nonlocal from_cache
        key = judgement_key(identity, metric, r["question"], r["answer"], r["used_passages"])
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            from_cache += 1
            value = hit
        else:
            async with gate:
                try:
                    value = float((await call(r, metric)).value)
                except Exception as e:  # noqa: BLE001 - a judge failure is a NaN for that sample, reported below
                    value = float("nan")
                    errors[metric].append(f"{r['id']}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
            if cache is not None:
                await asyncio.to_thread(cache.put, key, metric, value)
        r.setdefault("ragas", {})[metric] = value
        bar.update(1)

    async def run_all():
        gate = asyncio.Semaphore(max(1, concurrency))
        # Metric by metric (every answer's faithfulness, then relevancy, then context precision). Measured: with
        # per-kind slots this queues the judgements in flight on one kind's slot (63 s per judged answer in the
        # full run against 58 s in the 6-answer check); each answer's metrics side by side is the unmeasured fix
        # (eval/MEASUREMENTS.md).
        await asyncio.gather(*(one(r, m, gate) for m in METRICS for r in chosen))

    try:
        asyncio.run(run_all())
    finally:
        bar.close()
    res = {m: _mean([r.get("ragas", {}).get(m) for r in chosen]) for m in METRICS}
    failures = sum(len(v) for v in errors.values())
    res.update({
        "judged": len(chosen),
        "judgements": len(jobs),
        "from_cache": from_cache,
        "sample": how,
        # A mean over the answers the judge could score: how many failed, per metric, and why, so a figure
        # resting on few answers is visible rather than silently averaged.
        "judge_failures": failures,
        "judge_failures_by_metric": {k: len(v) for k, v in errors.items()},
        "judge_errors": [e for v in errors.values() for e in v][:10],
        "judge": getattr(judge, "name", type(judge).__name__),
    })
    if failures:
        print(f"warning: the judge failed {failures} of {len(jobs)} judgements "
              f"({res['judge_failures_by_metric']}); first: {res['judge_errors'][0]}", file=sys.stderr)
    return res


def summarise_answers(records: list[dict], *, judge=None, embedder=None, progress: bool = True,
                      sample: int | None = None, cache=None, concurrency: int = 4) -> dict:
    out = deterministic_summary(records)
    if judge is not None:
        out["ragas"] = ragas_scores(records, judge, embedder, sample=sample, cache=cache, progress=progress,
                                    concurrency=concurrency)
        out["judge"] = out["ragas"]["judge"]
    else:
        out["judge"] = "none (LLM-judged metrics skipped)"
    return out
