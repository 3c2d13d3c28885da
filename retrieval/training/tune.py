"""Choosing how the reranker meets the hybrid order (K, fusion recipe, weight) on the tune part only.

The reranker scores each question's hybrid candidates once (``Question``: the hybrid order to a fixed
depth, the reranker's score of each, the relevant chunk ids); every variant (``Variant``: the top K
reordered by ``retrieval.rerank.combine``) is then a re-sort, so a whole grid costs one scoring pass.

- ``grid``: hit@1, hit@5, MRR@10 and won/lost against the hybrid order of every variant;
- ``choose``: the best variant by hit@1, then MRR@10, then the smaller K (faster), then the lower weight;
- ``cross_validate``: k-fold on the given questions: each fold is ranked by the variant chosen on the other
  folds, so the pooled figure is what choosing on these questions is worth on questions it did not see.

Relevance and the metrics follow eval/retrieval.py (a question whose evidence is in no chunk counts as a
miss; ranks deeper than 10 count as not found). Only the tune part may be given to ``grid``,
``choose`` and ``cross_validate``; the test part gets the chosen variant once (``evaluate``).

Example::

    qs = [Question("q1", ["a", "b", "c"], [0.1, 0.9, 0.2], frozenset({"b"}))]
    choose(grid(qs, variants([2, 3], ["weight"], [0.0, 0.5])))      # Variant(k=2, fusion='weight', weight=0.5)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..rerank import combine

DEPTH = 10                      # the ranking the metrics read, as eval/retrieval.py (RANK_DEPTH)


@dataclass(frozen=True)
class Variant:
    k: int                      # candidates reranked (the rest keep the hybrid order after them)
    fusion: str                 # 'weight' or 'rrf' (retrieval.rerank.combine)
    weight: float

    def label(self) -> str:
        return f"K={self.k}, {self.fusion}, w={self.weight:g}"


@dataclass(frozen=True)
class Question:
    qid: str
    ids: list[str]              # hybrid order, at least as deep as the largest K
    ce: list[float]             # the reranker's score of each of ``ids``
    relevant: frozenset[str]


def variants(ks: Iterable[int], fusions: Iterable[str], weights: Iterable[float]) -> list[Variant]:
    return [Variant(k, f, w) for k in ks for f in fusions for w in weights]


def reorder(q: Question, v: Variant) -> list[str]:
    """The question's ranking under ``v``: its top K by combined score (ties: hybrid order), then the rest."""
    if v.k > len(q.ids) or len(q.ce) < min(v.k, len(q.ids)):
        raise ValueError(f"Question {q.qid} has {len(q.ids)} candidates ({len(q.ce)} scored); variant {v.label()} "
                         f"needs {v.k}: score deeper candidates.")
    head = q.ids[: v.k]
    c = combine(q.ce[: v.k], v.weight, fusion=v.fusion)
    order = sorted(range(len(head)), key=lambda i: (-c[i], i))
    return [head[i] for i in order] + q.ids[v.k:]


def first_rank(ids: Sequence[str], relevant: frozenset[str], depth: int = DEPTH) -> int | None:
    return next((r for r, cid in enumerate(ids[:depth], start=1) if cid in relevant), None)


def metrics(questions: Sequence[Question], v: Variant | None) -> dict:
    """hit@1, hit@5, MRR@10 of ``v`` (None: the hybrid order) and questions won/lost against the hybrid order."""
    n = len(questions)
    if n == 0:
        raise ValueError("No questions to measure (the part has no question with evidence).")
    out = {"n": n, "hit@1": 0.0, "hit@5": 0.0, "mrr@10": 0.0, "won": 0, "lost": 0}
    for q in questions:
        r = first_rank(q.ids if v is None else reorder(q, v), q.relevant)
        b = first_rank(q.ids, q.relevant)
        out["hit@1"] += r == 1
        out["hit@5"] += r is not None and r <= 5
        out["mrr@10"] += 1 / r if r else 0.0
        a, bb = r or DEPTH + 1, b or DEPTH + 1
        out["won"] += a < bb
        out["lost"] += a > bb
    for k in ("hit@1", "hit@5", "mrr@10"):
        out[k] = round(out[k] / n, 4)
    return out


def grid(questions: Sequence[Question], vs: Sequence[Variant]) -> list[tuple[Variant, dict]]:
    return [(v, metrics(questions, v)) for v in vs]


def choose(results: Sequence[tuple[Variant, dict]]) -> Variant:
    """The best variant: hit@1, then MRR@10, then the smaller K, then the lower weight."""
    if not results:
        raise ValueError("No variants to choose from.")
    return max(results, key=lambda vm: (vm[1]["hit@1"], vm[1]["mrr@10"], -vm[0].k, -vm[0].weight))[0]


def folds_of(questions: Sequence[Question], folds: int, seed: str = "rerank-cv") -> dict[str, int]:
    """Question id -> fold: the questions in a seeded order dealt round-robin (folds differ by at most one)."""
    order = sorted(questions, key=lambda q: hashlib.sha256(f"{seed}:{q.qid}".encode()).hexdigest())
    return {q.qid: i % folds for i, q in enumerate(order)}


def cross_validate(questions: Sequence[Question], vs: Sequence[Variant], folds: int = 5) -> dict:
    """Each fold ranked by the variant chosen on the others; pooled metrics and each fold's choice."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    chosen, ranked = [], []
    fold = folds_of(questions, folds)
    for f in range(folds):
        held = [q for q in questions if fold[q.qid] == f]
        rest = [q for q in questions if fold[q.qid] != f]
        if not held or not rest:
            continue
        v = choose(grid(rest, vs))
        chosen.append({"fold": f, "questions": len(held), "variant": v.label()})
        ranked += [Question(q.qid, reorder(q, v), [0.0] * len(q.ids), q.relevant) for q in held]
    pooled = metrics(ranked, None)                       # rankings already fused; won/lost vs hybrid below
    base = {q.qid: first_rank(q.ids, q.relevant) or DEPTH + 1 for q in questions}
    pooled["won"] = sum((first_rank(q.ids, q.relevant) or DEPTH + 1) < base[q.qid] for q in ranked)
    pooled["lost"] = sum((first_rank(q.ids, q.relevant) or DEPTH + 1) > base[q.qid] for q in ranked)
    return {"folds": chosen, "pooled": pooled}


# --------------------------------------------------------------------------- scoring a part once


def percentiles(ms: Sequence[float]) -> dict:
    """p50 and p95 (nearest rank) of timings in ms."""
    if not ms:
        return {"n": 0}
    s = sorted(ms)
    at = lambda p: s[min(len(s) - 1, max(0, round(p * len(s) + 0.5) - 1))]  # noqa: E731
    return {"n": len(s), "p50": round(at(0.5), 1), "p95": round(at(0.95), 1)}


@dataclass
class Scored:
    questions: list[Question]
    passages: dict[str, list[str]]      # question id -> its candidates' passages, hybrid order
    queries: dict[str, str]
    ms: list[float]                     # time to score each question's candidates (all of them)

    def latency(self) -> dict:
        return percentiles(self.ms)


def score_questions(reranker, queries: Sequence[tuple[str, str]], searcher, qrels: dict[str, set[str]], *,
                    depth: int, progress: bool = True) -> Scored:
    """The hybrid top ``depth`` of each (question id, search query) and the reranker's score of each, timed."""
    import sys
    import time

    from tqdm import tqdm

    from ..rerank import hit_passage

    out = Scored([], {}, {}, [])
    for qid, query in tqdm(queries, desc="Reranker scores (hybrid candidates)", unit="question",
                           disable=not progress, file=sys.stderr):
        hits, _ = searcher.search(query, mode="hybrid", top_k=depth)
        passages = [hit_passage(h) for h in hits]
        t = time.perf_counter()
        ce = [float(x) for x in reranker.score(query, passages)]
        out.ms.append((time.perf_counter() - t) * 1000)
        out.questions.append(Question(qid, [h.chunk_id for h in hits], ce, frozenset(qrels.get(qid, ()))))
        out.passages[qid], out.queries[qid] = passages, query
    return out


def latency(reranker, scored: Scored, k: int, *, rounds: int = 1) -> dict:
    """p50/p95 of scoring each question's top ``k`` candidates (the model loaded and warmed once before)."""
    import time

    first = scored.questions[0]
    reranker.score(scored.queries[first.qid], scored.passages[first.qid][:k])      # warm-up
    ms = []
    for _ in range(rounds):
        for q in scored.questions:
            t = time.perf_counter()
            reranker.score(scored.queries[q.qid], scored.passages[q.qid][:k])
            ms.append((time.perf_counter() - t) * 1000)
    return percentiles(ms)


# --------------------------------------------------------------------------- the default rule

MIN_HIT1_GAIN = 0.03            # issue 12/23: what the reranker must win on the test part to be the default


def default_rule(hybrid: dict, reranked: dict, *, min_gain: float = MIN_HIT1_GAIN) -> dict:
    """Whether a reranker may be the default, from its test-part figures and the hybrid order's: it must win
    at least ``min_gain`` hit@1 without lowering MRR@10. Says by how much it misses."""
    gain = round(reranked["hit@1"] - hybrid["hit@1"], 4)
    mrr = round(reranked["mrr@10"] - hybrid["mrr@10"], 4)
    short = []
    if gain < min_gain - 1e-9:
        short.append(f"hit@1 {gain:+.3f}, {min_gain - gain:.3f} short of {min_gain:+.3f}")
    if mrr < -1e-9:
        short.append(f"MRR@10 {mrr:+.3f} (must not fall)")
    return {"met": not short, "hit@1_gain": gain, "mrr@10_change": mrr, "missed_by": "; ".join(short)}
