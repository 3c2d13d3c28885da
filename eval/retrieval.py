"""IR metrics for retrieval runs, computed with ir-measures (trec_eval's definitions).

Relevance is judged over every chunk of the index (so recall is true recall), using the
golden set's evidence phrases.
"""

from __future__ import annotations

from typing import Iterable

import ir_measures
from ir_measures import RR, R, Success, nDCG

from .golden import GoldenItem, is_relevant

MEASURES = {"hit@1": Success @ 1, "hit@5": Success @ 5, "mrr@10": RR @ 10, "ndcg@10": nDCG @ 10,
            "recall@5": R @ 5, "recall@10": R @ 10}


def qrels_for(items: Iterable[GoldenItem], chunks: list[tuple[str, str]]) -> dict[str, set[str]]:
    """{question id: ids of relevant chunks} for questions with evidence; chunks are (id, text)."""
    out = {}
    for it in items:
        if it.answerable:
            out[it.id] = {cid for cid, text in chunks if is_relevant(text, it.evidence)}
    return out


def first_relevant_rank(ranked_ids: list[str], relevant: set[str]) -> int | None:
    for r, cid in enumerate(ranked_ids, start=1):
        if cid in relevant:
            return r
    return None


def retrieval_metrics(runs: dict[str, list[str]], qrels: dict[str, set[str]]) -> dict[str, float]:
    """Mean hit@1, hit@5, MRR@10, nDCG@10, recall@5/10 over the questions in qrels.

    A question whose evidence is in no chunk counts as a miss everywhere (never dropped).
    """
    qids = [q for q in qrels]
    if not qids:
        return {k: float("nan") for k in MEASURES}
    q = [ir_measures.Qrel(qid, cid, 1) for qid in qids for cid in qrels[qid]]
    run = [ir_measures.ScoredDoc(qid, cid, float(1000 - i))
           for qid in qids for i, cid in enumerate(runs.get(qid, []))]
    per_q: dict[str, dict[str, float]] = {qid: {k: 0.0 for k in MEASURES} for qid in qids}
    inv = {v: k for k, v in MEASURES.items()}
    for m in ir_measures.iter_calc(list(MEASURES.values()), q, run):
        per_q[m.query_id][inv[m.measure]] = float(m.value)
    return {k: sum(per_q[qid][k] for qid in qids) / len(qids) for k in MEASURES}
