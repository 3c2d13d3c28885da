"""The API against the CLI path, and three clients at once: ``python -m guides_qa.bench_api``.

One process loads the models once (``guides_qa.ui.engine.Engine``), serves the API on a free port, and for the
first ``N`` answerable questions of the test part of ``eval/golden.jsonl`` measures the first token and the total
time (1) through ``Pipeline.ask_stream``, what ``guides ask`` runs, and (2) through the API with
the real ``openai`` client, streamed, on ``N`` other questions (llama.cpp's prompt cache would make a repeated
question start at once). Then three clients ask three more questions at the same moment. Prints one JSON
object with the medians.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path


def main(n: int = 10) -> None:
    import uvicorn
    from openai import OpenAI

    from answer.answerer import Token
    from core.settings import load_settings
    from eval.golden import load_golden, select_part
    from guides_qa.api import create_app
    from guides_qa.ui.engine import Engine

    s = load_settings()
    items = [i for i in select_part(load_golden(Path("eval/golden.jsonl")), "test") if i.kind == "answerable"]
    if len(items) < 2 * n + 4:
        raise SystemExit(f"the test part has {len(items)} answerable questions; at most {(len(items) - 4) // 2} per path")
    # items[:n] directly, items[n:2n] through the API, items[2n:2n+3] by three clients at once, the last warms up
    engine = Engine()
    app = create_app(s, engine=engine)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    engine.warmup(s).wait(600)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)

    def direct(q: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        first = None
        for ev in engine.pipeline(s).ask_stream([q]):
            if isinstance(ev, Token) and first is None:
                first = time.perf_counter() - t0
        return first or float("nan"), time.perf_counter() - t0

    def via_api(q: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        first = None
        for ch in client.chat.completions.create(model="guides-qa", stream=True,
                                                 messages=[{"role": "user", "content": q}]):
            if first is None and ch.choices and ch.choices[0].delta.content:
                first = time.perf_counter() - t0
        return first or float("nan"), time.perf_counter() - t0

    direct(items[-1].question)                 # one warm answer before measuring (a question not timed)
    # Different questions each way: llama.cpp keeps earlier prompts in RAM (its prompt cache), so a question asked
    # a second time starts in a fraction of a second whichever path asks it.
    rows = []
    for a, b in zip(items[:n], items[n:2 * n]):
        rows.append({"direct": direct(a.question), "api": via_api(b.question)})
        print(f"{a.id} direct: first {rows[-1]['direct'][0]:.1f} s, total {rows[-1]['direct'][1]:.1f} s; "
              f"{b.id} api: first {rows[-1]['api'][0]:.1f} s, total {rows[-1]['api'][1]:.1f} s", file=sys.stderr)
    together: dict[str, tuple[float, float]] = {}
    start = threading.Barrier(3)                      # three questions not asked before, at the same moment

    def one(it):
        start.wait()
        together[it.id] = via_api(it.question)

    threads = [threading.Thread(target=one, args=(it,)) for it in items[2 * n:2 * n + 3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    med = lambda xs: round(statistics.median(xs), 2)  # noqa: E731
    out = {"questions": len(rows), "machine_cores": os.cpu_count(),
           "direct_first_p50": med([r["direct"][0] for r in rows]), "direct_total_p50": med([r["direct"][1] for r in rows]),
           "api_first_p50": med([r["api"][0] for r in rows]), "api_total_p50": med([r["api"][1] for r in rows]),
           "three_at_once": {k: {"first": round(v[0], 2), "total": round(v[1], 2)} for k, v in together.items()}}
    print(json.dumps(out, indent=1))
    server.should_exit = True
    engine.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
