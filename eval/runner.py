"""`guides eval`: run a golden set through the real pipeline and write the report.

Example::

    metrics = run_eval(load_settings(), Path("eval/golden.jsonl"), out=Path("eval/runs/latest"),
                       retrieve_only=True)
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from core.settings import Settings
from guides_qa.pipeline import Pipeline

from .golden import PARTS, SPLIT_SEED, TEST_SHARE, GoldenItem, load_golden, select_part
from .report import write_outputs
from .retrieval import first_relevant_rank, qrels_for, retrieval_metrics

RANK_DEPTH = 10


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ragas_context_scores(retrieved: list[str], reference: list[str]) -> tuple[float, float]:
    """ragas' non-LLM context precision and recall; the references are the chunks holding the evidence."""
    import warnings

    from ragas.dataset_schema import SingleTurnSample

    with warnings.catch_warnings():     # ragas 0.4 has these two only in its legacy namespace
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.metrics import NonLLMContextPrecisionWithReference, NonLLMContextRecall

    if not reference:
        return float("nan"), float("nan")
    s = SingleTurnSample(user_input="-", retrieved_contexts=retrieved or [""], reference_contexts=reference)

    async def both():
        return (await NonLLMContextPrecisionWithReference().single_turn_ascore(s),
                await NonLLMContextRecall().single_turn_ascore(s))

    p, r = asyncio.run(both())
    return float(p), float(r)


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_eval(settings: Settings, golden: Path, *, out: Path, limit: int | None = None, retrieve_only: bool = False,
             pipeline: Pipeline | None = None, judge="settings", progress: bool = True, split: str = "all") -> dict:
    """``judge``: a ragas judge, None to skip LLM-judged metrics, or "settings" to load settings.judge.

    ``split``: "tune" or "test" runs one part of the golden set (see eval.golden), "all" both.
    """
    items = select_part(load_golden(golden), split)   # validated before any work
    if limit:
        items = items[:limit]
    own = pipeline is None
    pipe = pipeline or Pipeline(settings)
    try:
        return _run(settings, golden, items, pipe, out=out, retrieve_only=retrieve_only, judge=judge, progress=progress,
                    split=split)
    finally:
        if own:
            pipe.close()


def wins_losses(runs: dict[str, list[str]], base: dict[str, list[str]], qrels: dict[str, set[str]]) -> dict[str, int]:
    """Questions where ``runs`` ranks the first relevant passage better (won) or worse (lost) than ``base``.

    A question whose relevant passage is missing from a top-10 ranks below every rank in it.
    """
    out = {"won": 0, "lost": 0, "tied": 0}
    for qid, rel in qrels.items():
        a = first_relevant_rank(runs.get(qid, []), rel) or RANK_DEPTH + 1
        b = first_relevant_rank(base.get(qid, []), rel) or RANK_DEPTH + 1
        out["won" if a < b else "lost" if a > b else "tied"] += 1
    return out


def by_part(items: list[GoldenItem], runs: dict[str, dict[str, list[str]]], qrels: dict[str, set[str]],
            records: dict[str, dict] | None) -> dict:
    """Retrieval metrics per ablation, wins/losses against the hybrid order, and answer metrics, per part and overall."""
    out = {}
    for part in [*PARTS, "all"]:
        ids = {i.id for i in items if part == "all" or i.part == part}
        if not ids:
            continue
        q = {k: v for k, v in qrels.items() if k in ids}
        kinds: dict[str, int] = {}
        for i in items:
            if i.id in ids:
                kinds[i.kind] = kinds.get(i.kind, 0) + 1
        res: dict = {"n": len(ids), "kinds": kinds, "retrieval": {}}
        for a, run in runs.items():
            res["retrieval"][a] = {"n": len(q), **retrieval_metrics(run, q)}
            if a != "hybrid" and "hybrid" in runs:
                res["retrieval"][a]["vs_hybrid"] = wins_losses(run, runs["hybrid"], q)
        if records is not None:
            from .answers import deterministic_summary

            res["answers"] = deterministic_summary([r for k, r in records.items() if k in ids])
        out[part] = res
    return out


def _run(settings, golden, items, pipe, *, out, retrieve_only, judge, progress, split="all") -> dict:
    version = pipe.index.refresh()
    if not retrieve_only and judge == "settings":
        from .judge import load_judge

        judge = load_judge(settings, pipe)
    chunks = pipe.index.layout.require_current().chunks()
    by_id = {c.chunk_id: c for c in chunks}
    qrels = qrels_for(items, [(c.chunk_id, c.text) for c in chunks])
    ablations = ["bm25", "dense", "hybrid"] + (["hybrid+rerank"] if pipe.has_reranker else [])
    default = "hybrid+rerank" if pipe.has_reranker else "hybrid"

    # As the app does at start-up: cache the reranker's passage encodings, so per-question latency is the
    # steady state a user sees (the one-off cost is reported on its own).
    t0 = time.perf_counter()
    warmed = pipe.warm_reranker(chunks)
    warm_s = time.perf_counter() - t0

    runs: dict[str, dict[str, list[str]]] = {a: {} for a in ablations}
    per_q: dict[str, dict] = {}
    lat: dict[str, list[float]] = {}
    bar = tqdm(total=len(items) * (len(ablations) + (0 if retrieve_only else 1)), desc="Evaluating",
               unit="step", disable=not progress, file=sys.stderr)
    for it in items:
        query = pipe.search_query(it.turns)
        rec = {"id": it.id, "part": it.part, "kind": it.kind, "question": it.question, "turns": it.turns, "search_query": query,
               "relevant_chunks": len(qrels.get(it.id, ()))}
        for a in ablations:
            hits, timings = pipe.ranked(query, ablation=a, top_k=RANK_DEPTH)
            ids = [h.chunk_id for h in hits]
            runs[a][it.id] = ids
            if it.id in qrels:
                rec[f"first_relevant_rank[{a}]"] = first_relevant_rank(ids, qrels[it.id])
            if a == default:
                if retrieve_only:
                    for k, v in timings.items():
                        lat.setdefault(k, []).append(v)
                rec["contexts"] = [{"rank": h.rank, "chunk_id": h.chunk_id, "section": h.payload["section"],
                                    "scores": h.scores} for h in hits]
            bar.update(1)
        if not retrieve_only:
            from .answers import answer_record

            rec.update(answer_record(pipe, it, qrels.get(it.id, set()), by_id, lat))
            bar.update(1)
        per_q[it.id] = rec
    bar.close()

    retrieval = {}
    for a in ablations:
        m = retrieval_metrics(runs[a], qrels)
        cp, cr = [], []
        for qid, rel in qrels.items():
            ref = [by_id[c].text for c in rel]
            p, r = ragas_context_scores([by_id[c].text for c in runs[a][qid][:5] if c in by_id], ref)
            cp.append(p)
            cr.append(r)
        m["ragas_context_precision"] = statistics.fmean(cp) if cp else float("nan")
        m["ragas_context_recall"] = statistics.fmean(cr) if cr else float("nan")
        retrieval[a] = m
    by_kind = {}
    for kind in ("answerable", "followup"):
        q = {k: v for k, v in qrels.items() if per_q[k]["kind"] == kind}
        if q:
            by_kind[kind] = {"n": len(q), **retrieval_metrics(runs[default], q)}

    kinds: dict[str, int] = {}
    for it in items:
        kinds[it.kind] = kinds.get(it.kind, 0) + 1
    metrics = {
        "run": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": _machine(),
                "golden": str(golden), "n_questions": len(items), "kinds": kinds, "default_pipeline": default,
                "split": {"part": split, "seed": SPLIT_SEED, "test_share": TEST_SHARE},
                "retrieve_only": retrieve_only,
                "reranker_warmup": {"passages": warmed, "seconds": round(warm_s, 2)},
                "settings_summary": f"embed={settings.embed_model}, fusion={settings.fusion}, "
                                    f"prefetch={settings.prefetch_limit}, reranker={settings.reranker}, "
                                    f"candidates={settings.rerank_candidates}, llm={settings.llm}"},
        "index": {"version": version.vid, "n_chunks": len(chunks), "n_guides": len(version.meta.get("files", {})),
                  "ingest_seconds": (version.meta.get("seconds") or {}).get("total"),
                  "token_stats": version.meta.get("token_stats")},
        "retrieval": retrieval,
        "retrieval_by_kind": by_kind,
        "by_part": by_part(items, runs, qrels, None if retrieve_only else per_q),
        "latency_ms": {k: {"n": len(v), "p50": _pct(v, .5), "p95": _pct(v, .95), "max": max(v)}
                       for k, v in lat.items() if v},
    }
    if not retrieve_only:
        from .answers import summarise_answers

        metrics["answers"] = summarise_answers(list(per_q.values()), judge=judge, embedder=pipe.embedder,
                                               progress=progress)
        for r in per_q.values():
            r.pop("used_passages", None)        # shown via contexts; keeps questions.jsonl readable
    write_outputs(out, metrics, list(per_q.values()), lat)
    return metrics
