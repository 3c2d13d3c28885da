"""The grader against hand-labelled judgements: ``python -m practice.measure``.

The fixture (``tests/practice/fixtures/grades.jsonl``) holds answers written to vary (complete answers in
other words, partial ones, a wrong number or name, an answer to a neighbouring question, off-topic text,
bullet lists, "I don't know", empty) to bank questions, and for each key point whether a person reads it as
covered, contradicted or missed. Questions are split into tune and test by sha256 of their id; thresholds
are chosen on tune and reported on test.

Reported per part: precision, recall and F1 of "covered", contradictions caught (labelled contradicted and
graded contradicted), false contradictions, and grading time.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path

from ingest.bank import Entry

from . import grade as grade_mod

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "practice" / "fixtures" / "grades.jsonl"


def part_of(qid: str) -> str:
    return "test" if int(hashlib.sha256(f"practice-split:{qid}".encode()).hexdigest(), 16) % 2 else "tune"


def load_fixture(path: Path = FIXTURE) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def judgements(rows: list[dict], bank: dict[str, Entry], grader) -> tuple[list[tuple[str, str, str]], list[float]]:
    """(part, labelled state, graded state) per key point, and grading times in ms."""
    out, times = [], []
    for r in rows:
        e = bank[r["id"]]
        if [p.text[:60] for p in e.points] != [t for t, _ in r["labels"]]:
            raise ValueError(f"{r['case']}: the bank's key points of {r['id']} changed; relabel this case")
        t0 = time.perf_counter()
        g = grader(e, r["answer"])
        times.append((time.perf_counter() - t0) * 1000)
        for (_, want), got in zip(r["labels"], g.points):
            out.append((part_of(r["id"]), want, got.state))
    return out, times


def scores(js: list[tuple[str, str, str]], part: str | None = None) -> dict:
    js = [j for j in js if part is None or j[0] == part]
    tp = sum(w == "covered" and g == "covered" for _, w, g in js)
    fp = sum(w != "covered" and g == "covered" for _, w, g in js)
    fn = sum(w == "covered" and g != "covered" for _, w, g in js)
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return {"n": len(js), "covered_precision": p, "covered_recall": r,
            "covered_f1": 2 * p * r / (p + r) if p + r else 0.0,
            "contradictions": sum(w == "contradicted" for _, w, _ in js),
            "contradictions_caught": sum(w == "contradicted" and g == "contradicted" for _, w, g in js),
            "false_contradictions": sum(w != "contradicted" and g == "contradicted" for _, w, g in js)}


def main() -> None:
    from core.settings import load_settings
    from ingest.embed import CachedEmbedder, load_embedder

    from ingest.bank import bank_from_folder

    s = load_settings()
    bank = {e.id: e for e in bank_from_folder(s.guides_dir)}
    rows = load_fixture()
    print(f"{len(rows)} answers, {sum(len(r['labels']) for r in rows)} judgements, "
          f"{len({r['id'] for r in rows})} questions ({sum(part_of(q) == 'tune' for q in {r['id'] for r in rows})} tune)")
    embedder = CachedEmbedder(load_embedder(s.embed_model))      # the same sentences recur across the grid
    grid = []
    for use_embed in (False, True):
        for share in (0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
            for cos in ((0.5, 0.55, 0.6, 0.65, 0.7) if use_embed else (None,)):
                if use_embed:
                    grade_mod.COVER_SHARE_EMBED = share
                else:
                    grade_mod.COVER_SHARE = share
                if cos is not None:
                    grade_mod.COVER_COSINE = cos
                emb = embedder if use_embed else None
                js, times = judgements(rows, bank, lambda e, a: grade_mod.grade(e, a, embedder=emb))
                grid.append(({"embed": use_embed, "share": share, "cosine": cos}, scores(js, "tune"),
                             scores(js, "test"), times))
    for embed in (False, True):
        best = max((g for g in grid if g[0]["embed"] == embed), key=lambda g: g[1]["covered_f1"])
        cfg, tune, test, times = best
        print(f"\n{'embed' if embed else 'lexical'}: chosen on tune {cfg}")
        for name, sc in (("tune", tune), ("test", test)):
            print(f"  {name}: covered P {sc['covered_precision']:.3f} R {sc['covered_recall']:.3f} "
                  f"F1 {sc['covered_f1']:.3f}; contradictions caught {sc['contradictions_caught']}/"
                  f"{sc['contradictions']}, false {sc['false_contradictions']} (n={sc['n']})")
        st = sorted(times)
        print(f"  grading time p50 {statistics.median(st):.1f} ms, p95 {st[int(0.95 * (len(st) - 1))]:.1f} ms")


if __name__ == "__main__":
    main()
