"""The README's measured table, written from an eval run's metrics.json, never by hand.

``update_readme(metrics_json, readme)`` replaces what lies between the two markers below with a short
table (at most 40 lines) of that run: its command, date, machine and wall time, retrieval per part,
answers per part, ragas' judged metrics with how many answers were judged, and latencies. The history of
earlier runs belongs in CHANGELOG.md and the MEASUREMENTS files.

Example::

    print(update_readme(Path("eval/runs/latest/metrics.json"), Path("README.md")))
"""

from __future__ import annotations

import json
import math
from pathlib import Path

BEGIN = "<!-- measured:begin (written by `guides eval --readme`; do not edit by hand) -->"
END = "<!-- measured:end -->"
MAX_LINES = 40


class ReadmeError(RuntimeError):
    """The metrics file or the README cannot be used; the message says what to fix."""


def _n(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _frac(k, n) -> str:
    return "–" if k is None or not n else f"{k}/{n} ({k / n:.3f})"


def _count(n, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _cmd(run: dict) -> str:
    parts = ["guides eval"]
    sp = (run.get("split") or {}).get("part", "all")
    if sp != "all":
        parts.append(f"--split {sp}")
    if run.get("retrieve_only"):
        parts.append("--retrieve-only")
    if run.get("judge_sample") not in (None, "24", 24):
        parts.append(f"--judge-sample {run['judge_sample']}")
    return " ".join(parts)


def render_table(m: dict) -> str:
    """The measured section's body for ``m`` (a metrics.json)."""
    run, parts = m["run"], m.get("by_part") or {}
    cols = [p for p in ("tune", "test", "all") if p in parts]
    wall = run.get("wall_seconds")
    lines = [f"From `{_cmd(run)}` on {run['date']} ({run['machine']}; {run['n_questions']} questions of "
             f"`{run['golden']}`, wall time {_n(wall / 60 if wall else None, 1)} min; "
             f"{_count(run.get('answer_workers', 1), 'question')} answered at once, "
             f"{_count(run.get('eval_parallel', 1), 'model slot')}). "
             "Every choice was made on `tune`; `test` chose nothing.",
             "", "| | " + " | ".join(f"{c} ({parts[c]['n']})" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(parts[c]) for c in cols) + " |")

    d = run.get("default_pipeline", "hybrid")
    row(f"retrieval hit@1 / hit@5 / MRR@10 ({d})", lambda p: " / ".join(
        _n(p["retrieval"].get(d, {}).get(k)) for k in ("hit@1", "hit@5", "mrr@10")))
    if any("answers" in parts[c] for c in cols):
        def ans(fn):
            return lambda p: fn(p["answers"]) if "answers" in p else "–"

        kinds = lambda p: p.get("kinds", {})  # noqa: E731
        row("correct answers (every answer fact, no unsupported number)",
            lambda p: _frac(p["answers"].get("correct_answers"),
                            kinds(p).get("answerable", 0) + kinds(p).get("followup", 0)) if "answers" in p else "–")
        row("verified precision (answers shown verified that are correct)", ans(
            lambda a: _frac(round(a["verified_precision"] * a["verified_answers"]) if a.get("verified_answers") else 0,
                            a.get("verified_answers"))))
        row("unanswerable questions refused", lambda p: _frac(p["answers"].get("refused_unanswerable"),
                                                              kinds(p).get("unanswerable", 0)) if "answers" in p else "–")
        row("answerable questions falsely refused", ans(lambda a: str(a.get("false_refusals"))))
        row("facts on screen (answer + quotes under it)", ans(lambda a: str(a.get("facts_on_screen"))))
        row("shown \"may be incomplete\": of them not correct", ans(
            lambda a: _frac(a["incomplete_answers"] - a["incomplete_correct"], a["incomplete_answers"])
            if a.get("incomplete_answers") else "0"))
        if any((parts[c].get("answers") or {}).get("ragas") for c in cols):
            row("ragas faithfulness / answer relevancy / context precision (judged answers)", ans(
                lambda a: " / ".join(_n(a["ragas"].get(k), 2) for k in ("faithfulness", "answer_relevancy",
                                                                         "context_precision"))
                + f" ({a['ragas']['judged']})" if a.get("ragas") else "–"))
    peer = m.get("peer") or {}
    if peer.get("by_part"):
        pcols = [c for c in ("tune", "test", "all") if c in peer["by_part"]]
        n_ids = len((peer.get("sample") or {}).get("ids", []))
        lines += ["", f"Against the peer, {peer.get('pipeline')}, on the same {n_ids} questions (a fixed "
                  "stratified sample): correct / wrong (answered but not right) / unanswerable refused / time per "
                  "answer p50.", "",
                  "| | " + " | ".join(f"{c} ({peer['by_part'][c]['ours']['answered_questions']})" for c in pcols) + " |",
                  "|---|" + "---|" * len(pcols)]

        def cmp_cell(x: dict) -> str:
            return (f"{x['correct_answers']}/{x['answerable']} / {x['wrong_answers']} / "
                    f"{x['refused_unanswerable']}/{x['unanswerable']} / {_n(x['seconds_p50'], 1)} s")

        for who, label in (("ours", "this project"), ("peer", "plain llama-index RAG")):
            lines.append(f"| {label} | " + " | ".join(cmp_cell(peer["by_part"][c][who]) for c in pcols) + " |")
    lines.append("")
    lat = m.get("latency_ms") or {}
    bits = [f"{name} p50 / p95 {_n(lat[k]['p50'] / 1000, 1)} / {_n(lat[k]['p95'] / 1000, 1)} s"
            for k, name in (("first_token", "first token"), ("total", "total answer time")) if k in lat]
    if bits:
        workers = run.get("answer_workers", 1)
        how = ("one question at a time" if workers == 1
               else f"measured while {workers} answers ran at once, so one person asking alone waits less")
        eb = run.get("evidence_budget") or {}
        if eb.get("prefill_tok_s"):
            how += (f"; the model read {eb['prefill_tok_s']:g} prompt tokens/s, so the evidence budget was "
                    f"{eb['tokens']} tokens")
        lines.append("Per answer, " + "; ".join(bits) + f" ({how}).")
    rag = (m.get("answers") or {}).get("ragas")
    if rag:
        st = run.get("stage_seconds") or {}
        lines.append(f"ragas judge: {rag['judge']}; {rag['judged']} answers judged ({rag['from_cache']} of "
                     f"{rag['judgements']} judgements from the cache, {rag['judge_failures']} failed), "
                     f"judging took {_n((st.get('judging') or 0) / 60, 1)} min. A small judge: compare runs, not "
                     "absolute values.")
    lines.append("Full report: `eval/runs/latest/report.html`; how each figure is defined and earlier runs: "
                 "[`eval/MEASUREMENTS.md`](eval/MEASUREMENTS.md), [`answer/MEASUREMENTS.md`](answer/MEASUREMENTS.md), "
                 "[`retrieval/RERANK_MEASUREMENTS.md`](retrieval/RERANK_MEASUREMENTS.md), "
                 "[`practice/MEASUREMENTS.md`](practice/MEASUREMENTS.md).")
    if len(lines) > MAX_LINES:
        raise ReadmeError(f"the measured table would be {len(lines)} lines, over {MAX_LINES}")
    return "\n".join(lines)


def update_readme(metrics_json: Path, readme: Path) -> str:
    """Rewrite the table between the markers of ``readme`` from ``metrics_json``; returns what it did."""
    try:
        m = json.loads(Path(metrics_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReadmeError(f"Cannot read {metrics_json} as an eval's metrics.json ({e}); run `guides eval` first.") from None
    if m.get("run", {}).get("retrieve_only"):
        raise ReadmeError(f"{metrics_json} is a --retrieve-only run; the README's table needs a full run "
                          f"(`guides eval --readme`).")
    try:
        text = Path(readme).read_text(encoding="utf-8")
    except OSError as e:
        raise ReadmeError(f"Cannot read {readme} ({e}).") from None
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise ReadmeError(f"{readme} has no measured section to rewrite: put the two lines\n{BEGIN}\n{END}\n"
                          f"where the table belongs.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = render_table(m)
    new = f"{head}{BEGIN}\n{body}\n{END}{tail}"
    tmp = Path(readme).with_name(f".{Path(readme).name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(readme)
    return f"Rewrote the measured table of {readme} ({body.count(chr(10)) + 1} lines) from {metrics_json}."
