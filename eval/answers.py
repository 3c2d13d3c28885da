"""Answer metrics: deterministic ones (keywords, citations, refusals) and ragas' LLM-judged ones."""

from __future__ import annotations

import asyncio
import math
import statistics
import sys

from tqdm import tqdm

from .golden import GoldenItem


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
        "used_passages": [h.payload["text"] for h in used],
        "used_relevant": any(h.chunk_id in relevant for h in used),
        "timings_ms": {k: round(v, 1) for k, v in res.timings_ms.items()},
    }


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else float("nan")


def deterministic_summary(records: list[dict]) -> dict:
    ans = [r for r in records if r["kind"] != "unanswerable" and "answer" in r]
    una = [r for r in records if r["kind"] == "unanswerable" and "answer" in r]
    cites = [c for r in ans for c in r["citations"]]
    out = {
        "answered_questions": len(ans) + len(una),
        "keyword_all_share": _mean([float(r["all_keywords"]) for r in ans]),
        "keyword_recall": _mean([r["keyword_recall"] for r in ans]),
        "citation_verified_share": _mean([float(c["verified"]) for c in cites]),
        "citation_relevant_share": _mean([float(c["relevant"]) for c in cites]),
        "citations_per_answer": _mean([len(r["citations"]) for r in ans if not r["refused"]]),
        "refusal_accuracy_unanswerable": _mean([float(r["refused"]) for r in una]),
        "false_refusal_rate_answerable": _mean([float(r["refused"]) for r in ans]),
    }
    return out


def ragas_scores(records: list[dict], judge, embedder, *, progress: bool) -> dict:
    """Faithfulness, answer relevancy and LLM context precision over the non-refused answers."""
    from ragas.metrics.collections import AnswerRelevancy, ContextPrecisionWithoutReference, Faithfulness

    from .judge import EmbedderAdapter

    faith = Faithfulness(llm=judge)
    relev = AnswerRelevancy(llm=judge, embeddings=EmbedderAdapter(embedder), strictness=1)
    cprec = ContextPrecisionWithoutReference(llm=judge)
    todo = [r for r in records if "answer" in r and not r["refused"] and r["used_passages"]]
    scores = {"faithfulness": [], "answer_relevancy": [], "llm_context_precision": []}
    errors: dict[str, list[str]] = {k: [] for k in scores}

    async def one(r):
        q, a, ctx = r["question"], r["answer"], r["used_passages"]
        out = {}
        for name, coro in (("faithfulness", faith.ascore(user_input=q, response=a, retrieved_contexts=ctx)),
                           ("answer_relevancy", relev.ascore(user_input=q, response=a)),
                           ("llm_context_precision", cprec.ascore(user_input=q, response=a, retrieved_contexts=ctx))):
            try:
                out[name] = float((await coro).value)
            except Exception as e:  # noqa: BLE001 - a judge failure is a NaN for that sample, reported below
                out[name] = float("nan")
                errors[name].append(f"{r['id']}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        return out

    for r in tqdm(todo, desc="Judging answers", unit="answer", disable=not progress, file=sys.stderr):
        got = asyncio.run(one(r))
        r["ragas"] = got
        for k, v in got.items():
            scores[k].append(v)
    res = {k: _mean(v) for k, v in scores.items()}
    res["judged_answers"] = len(todo)
    # A mean over the answers the judge could score: how many failed, per metric, and why, so a
    # figure resting on few answers is visible rather than silently averaged.
    res["judge_failures"] = sum(len(v) for v in errors.values())
    res["judge_failures_by_metric"] = {k: len(v) for k, v in errors.items()}
    res["judge_errors"] = [e for v in errors.values() for e in v][:10]
    if res["judge_failures"]:
        print(f"warning: the judge failed {res['judge_failures']} of {3 * len(todo)} judgements "
              f"({res['judge_failures_by_metric']}); first: {res['judge_errors'][0]}", file=sys.stderr)
    return res


def summarise_answers(records: list[dict], *, judge=None, embedder=None, progress: bool = True) -> dict:
    out = deterministic_summary(records)
    if judge is not None:
        out.update(ragas_scores(records, judge, embedder, progress=progress))
        out["judge"] = getattr(judge, "name", type(judge).__name__)
    else:
        out["judge"] = "none (LLM-judged metrics skipped)"
    return out


