"""The fixed, stratified sample of answers the ragas judge scores.

Judging is the slow part of an eval (a local 1.5B reads ~1,500 prompt tokens and writes ~300 per answer),
so by default only a sample is judged. It is drawn so that two runs judge the same questions:

- the candidates are the answers a judge can score: not refused, with the passages the model read;
- they are grouped by stratum, (part, kind): tune/answerable, test/followup, ...;
- each stratum gets a share of the sample proportional to its size (largest remainders; every stratum
  gets at least one while the sample has room), and takes its candidates in a fixed order,
  ``sha256(SAMPLE_SEED + ":" + id)``, so the sample of N is the same for every run whose answers are
  refused alike, and a larger sample contains a smaller one's questions stratum by stratum.

Example::

    chosen, how = draw_sample(records, 24)     # records: questions.jsonl rows with "answer", "refused", ...
    print(how["method"], how["strata"])
"""

from __future__ import annotations

import hashlib

SAMPLE_SEED = "guides-qa-judge-sample-v1"


def judgeable(r: dict) -> bool:
    return "answer" in r and not r.get("refused") and bool(r.get("used_passages"))


def _order(qid: str) -> str:
    return hashlib.sha256(f"{SAMPLE_SEED}:{qid}".encode()).hexdigest()


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` over strata of ``sizes`` in proportion (largest remainders), at least one per non-empty
    stratum while ``n`` allows, never more than a stratum holds."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    keys = sorted(k for k, v in sizes.items() if v > 0)
    quota = {k: 0 for k in sizes}
    if n >= len(keys):
        for k in keys:
            quota[k] = 1
    left = n - sum(quota.values())
    exact = {k: left * (sizes[k] - quota[k]) / max(1, total - sum(quota.values())) for k in keys}
    for k in keys:
        quota[k] += min(int(exact[k]), sizes[k] - quota[k])
    by_rest = sorted(keys, key=lambda k: (-(exact[k] - int(exact[k])), k))
    while sum(quota.values()) < n:
        for k in by_rest:
            if sum(quota.values()) < n and quota[k] < sizes[k]:
                quota[k] += 1
    return quota


def answered(r: dict) -> bool:
    return "answer" in r


def draw_sample(records: list[dict], n: int | None, *, eligible=judgeable,
                what: str = "judgeable answers (not refused, with passages)") -> tuple[list[dict], dict]:
    """The records to judge and how they were drawn; ``n`` None takes every eligible one. ``eligible``
    and ``what`` name the candidates (the peer's sample takes every answered question, refusals included)."""
    cands = [r for r in records if eligible(r)]
    strata: dict[str, list[dict]] = {}
    for r in cands:
        strata.setdefault(f"{r.get('part', 'all')}/{r['kind']}", []).append(r)
    for rs in strata.values():
        rs.sort(key=lambda r: _order(r["id"]))
    if n is None:
        quota = {k: len(v) for k, v in strata.items()}
        method = f"all {what}"
    else:
        quota = allocate({k: len(v) for k, v in strata.items()}, n)
        method = (f"fixed sample of {n}, stratified by part and kind in proportion to the {what}, "
                  f"each stratum in the order of sha256('{SAMPLE_SEED}:' + id)")
    chosen = [r for k in sorted(strata) for r in strata[k][:quota[k]]]
    how = {"method": method, "requested": "all" if n is None else n, "candidates": len(cands),
           "strata": {k: {"judged": quota[k], "of": len(strata[k])} for k in sorted(strata)},
           "ids": [r["id"] for r in chosen]}
    return chosen, how
