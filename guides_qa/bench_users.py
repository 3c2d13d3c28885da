"""Several people asking at the same moment: each one's first-token and total time, per number of llama.cpp slots.

The app's path: one ``Pipeline`` whose local model is wrapped in the app's ``QueuedLLM`` with as many slots
as the server has (``settings.llm_parallel``). For each slot count, a warm-up question, then ``rounds``
rounds in which ``users`` threads ask different answerable dev questions at once (a barrier releases them).

Run (idle machine)::

    python -m guides_qa.bench_users --slots 1,2,4 --users 3 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from core.settings import load_settings


def measure(slots: int, questions: list[list[str]], users: int, rounds: int) -> dict:
    from core.llm import load_llm
    from pipeline.qa import Pipeline
    from guides_qa.ui.engine import QueuedLLM

    s = load_settings(llm_parallel=slots)
    llm = load_llm(s)
    pipe = Pipeline(s, llm=QueuedLLM(llm, slots=getattr(llm, "slots", 1)))
    try:
        pipe.ask(["What is LoRA?"])                          # warm: models loaded, system prompt cached
        rows = []
        for r in range(rounds):
            batch = questions[r * users:(r + 1) * users]
            barrier = threading.Barrier(len(batch))
            got: dict[int, dict] = {}

            def one(i, turns):
                barrier.wait()
                res = pipe.ask(turns)
                got[i] = {"first_token_s": res.timings_ms.get("first_token", float("nan")) / 1000,
                          "total_s": res.timings_ms["total"] / 1000, "refused": res.answer.refused}

            threads = [threading.Thread(target=one, args=(i, t)) for i, t in enumerate(batch)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            rows.append({"round": r, "wall_s": wall, "users": [got[i] for i in sorted(got)]})
        ft = [u["first_token_s"] for row in rows for u in row["users"] if u["first_token_s"] == u["first_token_s"]]
        tot = [u["total_s"] for row in rows for u in row["users"]]
        # per arrival position: the fastest, middle and slowest user of each round
        by_pos = {p: statistics.fmean(sorted(u["total_s"] for u in row["users"])[p] for row in rows)
                  for p in range(users)}
        return {"slots": slots, "rounds": rows, "first_token_mean_s": statistics.fmean(ft) if ft else None,
                "first_token_max_s": max(ft) if ft else None, "total_mean_s": statistics.fmean(tot),
                "total_max_s": max(tot), "total_by_position_s": by_pos,
                "wall_mean_s": statistics.fmean(r["wall_s"] for r in rows)}
    finally:
        pipe.close()
        if hasattr(llm, "close"):
            llm.close()


def main(argv: list[str] | None = None) -> int:
    from eval.golden import load_golden

    p = argparse.ArgumentParser(prog="python -m guides_qa.bench_users", description=__doc__.split("\n")[0])
    p.add_argument("--slots", default="1,4", help="comma-separated slot counts (default 1,4)")
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--golden", default="eval/golden.jsonl")
    p.add_argument("--json", metavar="FILE", help="also write the raw results here")
    a = p.parse_args(argv)
    items = [i for i in load_golden(Path(a.golden)) if i.kind == "answerable" and i.part == "test"]
    questions = [i.turns for i in items[:a.users * a.rounds]]
    results = []
    for n in [int(x) for x in a.slots.split(",")]:
        print(f"measuring {n} slot(s)...", file=sys.stderr)
        results.append(measure(n, questions, a.users, a.rounds))
    print(f"| slots | first token, mean / worst (s) | total, mean / worst (s) | total by arrival, "
          f"{' / '.join(str(i + 1) for i in range(a.users))} (s) | all {a.users} answered (s) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['slots']} | {r['first_token_mean_s']:.1f} / {r['first_token_max_s']:.1f} | "
              f"{r['total_mean_s']:.1f} / {r['total_max_s']:.1f} | "
              + " / ".join(f"{v:.1f}" for v in r["total_by_position_s"].values())
              + f" | {r['wall_mean_s']:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
