"""Write the eval outputs: metrics.json, per-question JSONL, report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import io
import json
import math
from functools import lru_cache
from pathlib import Path

from markdown_it import MarkdownIt

RET_KEYS = ["hit@1", "hit@5", "mrr@10", "ndcg@10", "recall@5", "recall@10", "ragas_context_precision", "ragas_context_recall"]


PART_RET_KEYS = ["n", "hit@1", "hit@5", "mrr@10", "ndcg@10", "won", "lost"]
PART_ANS_KEYS = ["correctness", "correct_answers", "verified_answers", "verified_precision", "incomplete_answers",
                 "incomplete_correct", "facts_on_screen", "refused_unanswerable",
                 "refusal_accuracy_unanswerable", "false_refusals", "false_refusal_rate_answerable"]


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v).replace("|", "/") or "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def md_table(rows: list[dict], cols: list[str], first: str) -> str:
    head = "| " + " | ".join([first, *cols]) + " |\n|" + "---|" * (len(cols) + 1) + "\n"
    return head + "".join("| " + " | ".join([r["_name"], *(_fmt(r.get(c)) for c in cols)]) + " |\n" for r in rows)


def render_markdown(m: dict, per_question: list[dict] | None = None) -> str:
    out = ["# guides-qa eval report\n", f"- run: {m['run']['date']} on {m['run']['machine']}",
           f"- golden set: `{m['run']['golden']}` ({m['run']['n_questions']} questions: "
           + ", ".join(f"{k} {v}" for k, v in m['run']['kinds'].items()) + ")",
           f"- index: {m['index']['n_chunks']} chunks from {m['index']['n_guides']} guides, "
           f"cold ingest {_fmt(m['index'].get('ingest_seconds'))} s (as recorded by the last full build)",
           f"- settings: {m['run']['settings_summary']}"]
    w = m["run"].get("reranker_warmup") or {}
    if w.get("passages"):
        out.append(f"- reranker warm-up before the questions (as the app does at start-up): {w['passages']} passages "
                   f"in {_fmt(w.get('seconds'))} s, not counted in the latencies below")
    eb = m["run"].get("evidence_budget")
    if eb:
        out.append(f"- evidence budget: {eb['tokens']} tokens of the guides per answer ({eb['rule']}: {eb['why']})")
    if m.get("answers"):
        out.append(f"- judge: **{m['answers'].get('judge', 'none')}** (ragas scores are comparable only under the same judge)")
    out.append("\n## Retrieval (answerable + follow-up questions)\n")
    rows = [{"_name": name, **vals} for name, vals in m["retrieval"].items()]
    out.append(md_table(rows, RET_KEYS, "ablation"))
    if m.get("retrieval_by_kind"):
        out.append("\n### By question kind (default pipeline)\n")
        rows = [{"_name": k, **v} for k, v in m["retrieval_by_kind"].items()]
        out.append(md_table(rows, ["n", "hit@1", "hit@5", "mrr@10", "ndcg@10"], "kind"))
    if m.get("by_part"):
        out.extend(_render_parts(m))
    if m.get("answers"):
        a = m["answers"]
        out.append("\n## Answers\n")
        rows = [{"_name": k, "value": v} for k, v in a.items() if k not in ("judge", "by_kind", "ragas")]
        out.append(md_table(rows, ["value"], "metric"))
        if a.get("ragas"):
            out.extend(_render_ragas(a["ragas"]))
    if m.get("answers") and any("answers" in p for p in m.get("by_part", {}).values()):
        out.append("\n### Correctness by part\n")
        out.append("Correct: not refused, states every answer fact, and no number that none of its passages states. "
                   "Verified precision: the share of answers shown verified (every checkable sentence verified, no "
                   "part of the question left out, most of the best evidence stated) that are correct. Incomplete: "
                   "every sentence verified, but a part of the question left out (`answer_incomplete`); partial "
                   "(\"supported\"): every part answered, little of the best evidence stated (`answer_min_coverage`). "
                   "Facts on screen: every answer fact is in the "
                   "answer or in the guides' sentences shown under it without a click.\n")
        rows = [{"_name": part, "n": p["n"], **p["answers"]} for part, p in m["by_part"].items() if "answers" in p]
        out.append(md_table(rows, ["n", *PART_ANS_KEYS], "part"))
    if m.get("peer"):
        out.extend(_render_peer(m["peer"], per_question))
    answered = [q for q in per_question or [] if "correct" in q]
    if answered:
        out.append("\n### Per question\n")
        rows = [{"_name": q["id"], **q} for q in answered]
        out.append(md_table(rows, ["part", "kind", "correct", "refused", "missing_facts", "unsupported_numbers",
                                   "fully_verified", "status", "on_screen"], "id"))
    out.append("\n## Latency (ms)\n")
    rows = [{"_name": k, **v} for k, v in m["latency_ms"].items()]
    out.append(md_table(rows, ["n", "p50", "p95", "max"], "stage"))
    out.append("\nPer-question results: `questions.jsonl` (rank of the first relevant passage, answer, citations, scores).\n")
    return "\n".join(out)


def _render_ragas(r: dict) -> list[str]:
    """ragas' judged metrics: the means, how the sample was drawn, which answers were judged, failures."""
    sp = r.get("sample") or {}
    out = ["\n### ragas, LLM-judged\n",
           f"Judge: **{r.get('judge')}**. {r.get('judged', 0)} answers judged, {r.get('judgements', 0)} judgements, "
           f"{r.get('from_cache', 0)} from the cache. Sample: {sp.get('method', '–')}.\n"]
    out.append(md_table([{"_name": k, "value": r.get(k)} for k in ("faithfulness", "answer_relevancy",
                                                                   "context_precision")], ["value"], "metric"))
    if sp.get("strata"):
        out.append("\nJudged per stratum (of the judgeable answers): "
                   + ", ".join(f"{k} {v['judged']}/{v['of']}" for k, v in sp["strata"].items()) + ".\n")
    if sp.get("ids"):
        out.append("Judged questions: " + ", ".join(f"`{i}`" for i in sp["ids"]) + ".\n")
    if r.get("judge_failures"):
        out.append(f"\n**The judge failed {r['judge_failures']} judgements** "
                   f"({', '.join(f'{k}: {v}' for k, v in r['judge_failures_by_metric'].items())}); "
                   "each ragas mean covers only the answers it could score. First errors:\n")
        out.extend(f"- `{e}`" for e in r.get("judge_errors", []))
    return out


PEER_KEYS = ["answerable", "correct_answers", "wrong_answers", "unanswerable", "refused_unanswerable",
             "false_refusals", "seconds_p50"]


def _render_peer(p: dict, per_question: list[dict] | None = None) -> list[str]:
    """The project beside the peer (plain llama-index RAG), on the same questions, per part."""
    sp = p.get("sample") or {}
    out = ["\n## Against the peer: plain llama-index RAG\n",
           f"Peer: {p.get('pipeline')}. Both answered the same {len(sp.get('ids', []))} questions "
           f"({sp.get('method', '–')}). Wrong answers: answered but not correct, or an unanswerable question "
           "answered instead of refused. seconds_p50: total time per answer (the project streams; its first "
           "token comes earlier).\n"]
    rows = []
    for part, both in (p.get("by_part") or {}).items():
        rows.append({"_name": f"{part}: this project", **both["ours"]})
        rows.append({"_name": f"{part}: peer", **both["peer"]})
    out.append(md_table(rows, PEER_KEYS, "part: pipeline"))
    diff = [q for q in per_question or [] if q.get("peer") and q["peer"]["correct"] != q.get("correct")]
    if diff:
        out.append("\nQuestions where exactly one of the two is correct:\n")
        out.append(md_table([{"_name": q["id"], "part": q["part"], "kind": q["kind"], "ours": q.get("correct"),
                              "peer": q["peer"]["correct"], "peer_missing": q["peer"]["missing_facts"]}
                             for q in diff], ["part", "kind", "ours", "peer", "peer_missing"], "id"))
    return out


def _render_parts(m: dict) -> list[str]:
    sp = m["run"].get("split") or {}
    out = ["\n## Tune / test split\n",
           f"Parts fixed by sha256(seed:id), seed `{sp.get('seed')}`, test share {sp.get('test_share')}; "
           f"this run: `{sp.get('part', 'all')}`. Decisions are made on `tune` and reported on `test`. "
           "won / lost: questions whose first relevant passage this ablation ranks better / worse than the hybrid "
           "order (a miss in the top 10 ranks below every hit).\n"]
    rows = []
    for part, p in m["by_part"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in p.get("kinds", {}).items())
        for a, r in p["retrieval"].items():
            vs = r.get("vs_hybrid") or {}
            rows.append({"_name": f"{part} ({kinds})" if a == next(iter(p["retrieval"])) else part,
                         "ablation": a, **r, "won": vs.get("won"), "lost": vs.get("lost")})
    head = "| part | ablation | " + " | ".join(PART_RET_KEYS) + " |\n|" + "---|" * (len(PART_RET_KEYS) + 2) + "\n"
    out.append(head + "".join(f"| {r['_name']} | {r['ablation']} | " + " | ".join(_fmt(r.get(k)) for k in PART_RET_KEYS)
                              + " |\n" for r in rows))
    return out


def _plot_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def render_html(m: dict, md: str, latencies: dict[str, list[float]], per_question: list[dict] | None = None) -> str:
    """The report as one self-contained page: the markdown rendered, and its charts as inline PNGs (per-part
    metrics, retrieval per ablation, answer states, latency per stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: list[tuple[str, str]] = []

    def bars(ax, groups: list[str], series: dict[str, list[float]]):
        w = 0.8 / max(1, len(series))
        for i, (label, vals) in enumerate(series.items()):
            ax.bar([x + i * w for x in range(len(groups))], vals, w, label=label)
        ax.set_xticks([x + w * (len(series) - 1) / 2 for x in range(len(groups))], groups)

    def num(v) -> float:
        return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    parts = m.get("by_part") or {}
    if parts:
        d = m["run"].get("default_pipeline", "hybrid")
        keys = ["hit@1", "hit@5", "mrr@10"]
        akeys = ["correctness", "verified_precision", "facts_on_screen_share"]
        has_ans = any("answers" in p for p in parts.values())
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        series = {part: [num(p["retrieval"].get(d, {}).get(k)) for k in keys]
                  + ([num((p.get("answers") or {}).get(k)) for k in akeys] if has_ans else [])
                  for part, p in parts.items()}
        bars(ax, keys + (["correct", "verified prec.", "facts on screen"] if has_ans else []), series)
        ax.set_ylim(0, 1)
        ax.set_title(f"Per part: retrieval ({d})" + (" and answers" if has_ans else ""))
        ax.legend(fontsize=8, loc="lower right")
        charts.append(("chart-parts", _plot_png(fig)))
        plt.close(fig)
    names = list(m["retrieval"])
    if names:
        keys = ["hit@1", "hit@5", "mrr@10", "ndcg@10"]
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        bars(ax, keys, {n: [num(m["retrieval"][n].get(k)) for k in keys] for n in names})
        ax.set_ylim(0, 1)
        ax.set_title("Retrieval metrics per ablation (all parts)")
        ax.legend(fontsize=8, loc="lower right")
        charts.append(("chart-retrieval", _plot_png(fig)))
        plt.close(fig)
    states: dict[str, dict[str, int]] = {}
    for q in per_question or []:
        if q.get("status"):
            st = "refused" if q.get("refused") else q["status"]
            states.setdefault(st, {"correct": 0, "not correct": 0})["correct" if q.get("correct") else "not correct"] += 1
    if states:
        fig, ax = plt.subplots(figsize=(7.5, 3.0))
        order = sorted(states, key=lambda k: -sum(states[k].values()))
        left = [0] * len(order)
        for label, color in (("correct", "#4c9a5b"), ("not correct", "#c8553d")):
            vals = [states[k][label] for k in order]
            ax.barh(order, vals, left=left, label=label, color=color)
            left = [a + b for a, b in zip(left, vals)]
        ax.invert_yaxis()
        ax.set_xlabel("answers")
        ax.set_title("Answer states shown to the reader, and whether the answer is correct")
        ax.legend(fontsize=8, loc="lower right")
        charts.append(("chart-states", _plot_png(fig)))
        plt.close(fig)
    lat = {k: v for k, v in latencies.items() if v}
    if lat:
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        ax.boxplot(list(lat.values()), orientation="horizontal")
        ax.set_yticks(range(1, len(lat) + 1), list(lat))
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_title("Latency per stage")
        charts.append(("chart-latency", _plot_png(fig)))
        plt.close(fig)
    body = _md_to_html(md)
    pics = "".join(f'<img class="chart" id="{cid}" alt="{cid}" src="data:image/png;base64,{b}"/>' for cid, b in charts)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>guides-qa eval</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}"
            "</style></head><body><h1>guides-qa eval report</h1><section id='charts'>" + pics + "</section>"
            + body.replace("<h1>guides-qa eval report</h1>", "", 1) + "</body></html>")


def _md_to_html(md: str) -> str:
    """The report's markdown as HTML (CommonMark with tables); raw HTML in it is escaped, never passed through."""
    return _markdown().render(md)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def write_outputs(out: Path, metrics: dict, per_question: list[dict], latencies: dict[str, list[float]]) -> None:
    """Write all files into a temp folder first, then move them in, so a failed run leaves no half report."""
    out.mkdir(parents=True, exist_ok=True)
    md = render_markdown(metrics, per_question)
    files = {
        "metrics.json": json.dumps(metrics, indent=1, ensure_ascii=False),
        "questions.jsonl": "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in per_question),
        "report.md": md,
        "report.html": render_html(metrics, md, latencies, per_question),
    }
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


def changed_questions(old_questions: Path, new_questions: Path) -> str:
    """The questions whose answer state or correctness differs between two runs' questions.jsonl."""
    def load(p: Path) -> dict[str, dict]:
        out = {}
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                out[r["id"]] = r
        return out

    if not old_questions.is_file():
        return f"No {old_questions.name} beside the old metrics.json: per-question changes not listed."
    try:
        old, new = load(old_questions), load(new_questions)
    except (OSError, ValueError, KeyError) as e:
        return f"Cannot read {old_questions} ({e}): per-question changes not listed."
    rows = []
    for qid, n in new.items():
        o = old.get(qid)
        if o is None or "correct" not in n or "correct" not in o:
            continue
        if o.get("status") != n.get("status") or o.get("correct") != n.get("correct"):
            def show(r):
                return f"{r.get('status')}, {'correct' if r.get('correct') else 'not correct'}"
            rows.append(f"  {qid:<8} {n.get('part', ''):<5} {show(o):<28} -> {show(n)}")
    if not rows:
        return "No question changed its answer state or correctness."
    return f"{len(rows)} question(s) changed answer state or correctness (old -> new):\n" + "\n".join(rows)


def compare(old: dict, new: dict) -> str:
    """Deltas of every shared numeric figure, new minus old."""
    lines = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in b:
                if k in a and k != "kinds":
                    walk(a[k], b[k], f"{path}.{k}" if path else k)
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            if not (math.isnan(a) or math.isnan(b)):
                d = b - a
                mark = "" if abs(d) < 1e-9 else ("  ▲" if d > 0 else "  ▼")
                lines.append(f"{path:<48} {a:>10.3f} -> {b:>10.3f}  ({d:+.3f}){mark}")

    for section in ("retrieval", "retrieval_by_kind", "by_part", "answers", "latency_ms"):
        if section in old and section in new:
            walk(old[section], new[section], section)
    return "\n".join(lines) if lines else "No shared figures to compare."
