"""`guides eval`: run a golden set through the real pipeline and write the report.

Example::

    metrics = run_eval(load_settings(), Path("eval/golden.jsonl"), out=Path("eval/runs/latest"),
                       retrieve_only=True)
"""

from __future__ import annotations

import asyncio
import os
import platform
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from core.settings import Settings
from pipeline.qa import Pipeline

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


def parse_judge_sample(value: str | int | None, *, flag: str = "--judge-sample") -> int | None:
    """'all' -> None (every answer); a positive number -> that many; anything else is named."""
    v = str(value).strip().lower()
    if v == "all":
        return None
    if v.isdigit() and int(v) > 0:
        return int(v)
    raise ValueError(f"{flag} {value!r}: give a positive number of questions or 'all'.")


SPEED_FILE = "speed.json"


def load_speed(settings: Settings) -> dict | None:
    """Seconds per answer and per judged answer measured by the last run on this machine, if any."""
    try:
        rec = json.loads((settings.data_dir / "eval" / SPEED_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("machine") == _machine() and rec.get("llm") == settings.llm else None


def save_speed(settings: Settings, metrics: dict) -> None:
    """Remember this run's throughput for the next run's estimate (a failed write only loses the estimate)."""
    st = metrics["run"].get("stage_seconds") or {}
    rag = (metrics.get("answers") or {}).get("ragas") or {}
    prev = load_speed(settings) or {}
    rec = {"machine": _machine(), "llm": settings.llm, "judge": rag.get("judge", prev.get("judge")),
           "workers": metrics["run"].get("eval_parallel")}
    n = metrics["run"]["n_questions"]
    rec["answer_s"] = round(st["answering"] / n, 2) if st.get("answering") and n else prev.get("answer_s")
    fresh = (rag.get("judgements", 0) - rag.get("from_cache", 0)) / 3
    rec["judge_s"] = round(st["judging"] / fresh, 2) if st.get("judging") and fresh >= 1 else prev.get("judge_s")
    n_peer = ((metrics.get("peer") or {}).get("sample") or {}).get("ids")
    rec["peer_s"] = round(st["peer"] / len(n_peer), 2) if st.get("peer") and n_peer else prev.get("peer_s")
    rec["retrieval_s"] = round(st["retrieval"] / n, 3) if st.get("retrieval") and n else prev.get("retrieval_s")
    try:
        path = settings.data_dir / "eval" / SPEED_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        tmp.replace(path)
    except OSError:
        pass


def plan_line(settings: Settings, items: list[GoldenItem], *, retrieve_only: bool, judge, sample: int | None,
              workers: int, speed: dict | None, peer_n: int | None = 0) -> str:
    """One line, before any work: what will run and about how long it will take on this machine."""
    kinds: dict[str, int] = {}
    for it in items:
        kinds[it.kind] = kinds.get(it.kind, 0) + 1
    parts = [f"guides eval: {len(items)} questions ({', '.join(f'{k} {v}' for k, v in kinds.items())})"]
    if retrieve_only:
        parts.append("retrieval only")
    else:
        parts.append(f"answered by {settings.llm}, {workers} at once")
        n_peer = 0 if peer_n == 0 else len(items) if peer_n is None else min(peer_n, len(items))
        parts.append(f"the peer (plain llama-index RAG) on {n_peer} of them" if n_peer else "no peer")
        if judge is None:
            parts.append("no ragas judge")
        else:
            n = len(items) if sample is None else min(sample, len(items))
            parts.append(f"ragas judge {getattr(judge, 'name', judge)} on {'all' if sample is None else 'a fixed sample of'} "
                         f"{n} answers (cached judgements reused)")
    est = None
    if speed:
        est = len(items) * (speed.get("retrieval_s") or 0)
        if not retrieve_only:
            est += len(items) * (speed.get("answer_s") or 0) + n_peer * (speed.get("peer_s") or 0)
            if judge is not None:
                est += min(len(items), sample or len(items)) * (speed.get("judge_s") or 0)
    if est is None:
        parts.append("estimate: none yet on this machine (the bars show the time left)")
    else:
        parts.append(f"estimate: at most ~{max(1, round(est / 60))} min, from the last run on this machine")
    return "; ".join(parts) + "."


def by_part_ragas(metrics: dict, per_q: dict[str, dict]) -> None:
    """The judged answers' ragas means, per part, beside that part's answer figures."""
    from .answers import METRICS, _mean

    for part, res in metrics.get("by_part", {}).items():
        judged = [r for r in per_q.values() if r.get("ragas") and (part == "all" or r["part"] == part)]
        if "answers" in res and judged:
            res["answers"]["ragas"] = {"judged": len(judged),
                                       **{m: _mean([r["ragas"].get(m) for r in judged]) for m in METRICS}}


def run_eval(settings: Settings, golden: Path, *, out: Path, limit: int | None = None, retrieve_only: bool = False,
             pipeline: Pipeline | None = None, judge="settings", progress: bool = True, split: str = "all",
             judge_sample: str | int | None = None, judge_cache: bool | None = None, peer: bool | None = None,
             peer_sample: str | int | None = None) -> dict:
    """``judge``: a ragas judge, None to skip LLM-judged metrics, or "settings" to load settings.judge.

    ``split``: "tune" or "test" runs one part of the golden set (see eval.golden), "all" both.
    ``judge_sample``: answers to judge, a number or "all" (default: settings.judge_sample; with ``limit``,
    "all" judges those questions). ``judge_cache``: reuse stored judgements (default: settings.judge_cache).
    ``peer``: also answer with the peer (``eval.peer``; default: settings.eval_peer) on ``peer_sample``
    questions (a number or "all"; default: settings.peer_sample; with ``limit``, "all" answers those).
    The local model runs ``settings.eval_parallel`` requests at once.
    """
    sample = parse_judge_sample(settings.judge_sample if judge_sample is None else judge_sample)
    use_peer = settings.eval_peer if peer is None else peer
    peer_n = parse_judge_sample(settings.peer_sample if peer_sample is None else peer_sample, flag="--peer-sample")
    items = select_part(load_golden(golden), split)   # validated before any work
    if limit:
        items = items[:limit]
    own = pipeline is None
    settings = settings.model_copy(update={"llm_parallel": settings.eval_parallel})
    pipe = pipeline or Pipeline(settings)
    use_cache = settings.judge_cache if judge_cache is None else judge_cache
    try:
        return _run(settings, golden, items, pipe, out=out, retrieve_only=retrieve_only, judge=judge, progress=progress,
                    split=split, sample=sample, use_cache=use_cache, peer_n=peer_n if use_peer else 0)
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


def run_peer(pipe, items: list[GoldenItem], per_q: dict[str, dict], qrels: dict[str, set[str]], n: int | None, *,
             progress: bool = True) -> dict:
    """Answer a fixed stratified sample of ``n`` questions (None: all) with the peer (``eval.peer``); each
    record gets its answer under "peer"; returns metrics.json's "peer": the peer's figures and the project's
    on the same questions, overall and per part."""
    from .answers import comparison_summary
    from .peer import PEER_PIPELINE, PEER_TOP_K, peer_engine, peer_record
    from .sample import answered, draw_sample

    chosen, how = draw_sample(list(per_q.values()), n, eligible=answered, what="answered questions (refusals included)")
    by_id = {it.id: it for it in items}
    engine = peer_engine(pipe)
    bar = tqdm(total=len(chosen), desc=f"Peer (plain llama-index RAG, top {PEER_TOP_K})", unit="answer",
               disable=not progress, file=sys.stderr)
    for r in chosen:
        r["peer"] = peer_record(engine, pipe, by_id[r["id"]], qrels.get(r["id"], set()))
        bar.update(1)
    bar.close()
    out = {"pipeline": PEER_PIPELINE, "top_k": PEER_TOP_K, "sample": how}
    for part in [*PARTS, "all"]:
        rs = [r for r in chosen if part == "all" or r["part"] == part]
        if rs:
            out.setdefault("by_part", {})[part] = {"peer": comparison_summary([r["peer"] for r in rs]),
                                                   "ours": comparison_summary(rs)}
    # the contract: the peer's figures at the top level, the project's on the same questions beside them
    out.update(out["by_part"]["all"]["peer"] if chosen else {})
    out["ours"] = out["by_part"]["all"]["ours"] if chosen else {}
    return out


def _run(settings, golden, items, pipe, *, out, retrieve_only, judge, progress, split="all", sample=None,
         use_cache=True, peer_n: int | None = 0) -> dict:
    t_run = time.perf_counter()
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
    cache = None
    if judge is not None and not retrieve_only and use_cache:
        from .judge_cache import CACHE_FILE, JudgeCache

        cache = JudgeCache(settings.data_dir / "eval" / CACHE_FILE)
    slots = max(1, settings.eval_parallel)
    workers = max(1, min(settings.eval_answer_workers, slots))
    if progress:
        print(plan_line(settings, items, retrieve_only=retrieve_only, judge=judge, sample=sample, workers=workers,
                        speed=load_speed(settings), peer_n=peer_n), file=sys.stderr)
    stage_s: dict[str, float] = {}
    t_stage = time.perf_counter()
    bar = tqdm(total=len(items), desc="Retrieval (3 ablations)", unit="question", disable=not progress,
               file=sys.stderr)
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
        per_q[it.id] = rec
        bar.update(1)
    bar.close()
    stage_s["retrieval"] = time.perf_counter() - t_stage
    if not retrieve_only:
        from .answers import answer_record

        budget = pipe.answerer.evidence_budget          # measured once, before the first answer's clock starts
        if progress:
            print(f"Evidence budget: {budget.tokens} tokens ({budget.why}).", file=sys.stderr)
        # Questions are answered ``workers`` at once: the local server decodes its slots in one batch, and each
        # answer's own latencies (first token, total) are what a user sees when that many ask at once.
        t_stage = time.perf_counter()
        bar = tqdm(total=len(items), desc=f"Answering ({workers} at once)", unit="answer", disable=not progress,
                   file=sys.stderr)
        lat_lock = threading.Lock()

        def answer(it):
            own_lat: dict[str, list[float]] = {}
            got = answer_record(pipe, it, qrels.get(it.id, set()), by_id, own_lat)
            with lat_lock:
                for k, v in own_lat.items():
                    lat.setdefault(k, []).extend(v)
            bar.update(1)
            return it.id, got

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-answer") as ex:
            try:
                for qid, got in ex.map(answer, items):
                    per_q[qid].update(got)
            except BaseException:
                ex.shutdown(wait=False, cancel_futures=True)
                raise
        bar.close()
        stage_s["answering"] = time.perf_counter() - t_stage
        if peer_n != 0:
            t_stage = time.perf_counter()
            peer_summary = run_peer(pipe, items, per_q, qrels, peer_n, progress=progress)
            stage_s["peer"] = time.perf_counter() - t_stage

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
                "judge_sample": None if retrieve_only or judge is None else ("all" if sample is None else sample),
                "reranker_warmup": {"passages": warmed, "seconds": round(warm_s, 2)},
                "evidence_budget": None if retrieve_only else pipe.answerer.evidence_budget.to_json(),
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
    if not retrieve_only and peer_n != 0:
        metrics["peer"] = peer_summary
    if not retrieve_only:
        from .answers import summarise_answers

        t_stage = time.perf_counter()
        try:
            metrics["answers"] = summarise_answers(list(per_q.values()), judge=judge, embedder=pipe.embedder,
                                                   progress=progress, sample=sample, cache=cache,
                                                   concurrency=slots)
        finally:
            if cache is not None:
                cache.close()
        stage_s["judging"] = time.perf_counter() - t_stage
        for r in per_q.values():
            r.pop("used_passages", None)        # shown via contexts; keeps questions.jsonl readable
        by_part_ragas(metrics, per_q)
    metrics["run"]["stage_seconds"] = {k: round(v, 1) for k, v in stage_s.items()}
    metrics["run"]["wall_seconds"] = round(time.perf_counter() - t_run, 1)
    metrics["run"]["eval_parallel"] = slots
    metrics["run"]["answer_workers"] = workers
    save_speed(settings, metrics)
    write_outputs(out, metrics, list(per_q.values()), lat)
    return metrics
