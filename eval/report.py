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
        rows = [{"_name": k, "value": v} for k, v in a.items()
                if k not in ("judge", "by_kind", "judge_failures_by_metric", "judge_errors")]
        out.append(md_table(rows, ["value"], "metric"))
        if a.get("judge_failures"):
            out.append(f"\n**The judge failed {a['judge_failures']} judgements** "
                       f"({', '.join(f'{k}: {v}' for k, v in a['judge_failures_by_metric'].items())}); "
                       "each ragas mean covers only the answers it could score. First errors:\n")
            out.extend(f"- `{e}`" for e in a.get("judge_errors", []))
    if m.get("answers") and any("answers" in p for p in m.get("by_part", {}).values()):
        out.append("\n### Correctness by part\n")
        out.append("Correct: not refused, states every answer fact, and no number that none of its passages states. "
                   "Verified precision: the share of answers shown verified (every checkable sentence verified, and "
                   "not flagged incomplete) that are correct. Incomplete: every sentence verified, but the answer "
                   "states little of its best evidence (`answer_min_coverage`). Facts on screen: every answer fact is in the "
                   "answer or in the guides' sentences shown under it without a click.\n")
        rows = [{"_name": part, "n": p["n"], **p["answers"]} for part, p in m["by_part"].items() if "answers" in p]
        out.append(md_table(rows, ["n", *PART_ANS_KEYS], "part"))
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


def render_html(m: dict, md: str, latencies: dict[str, list[float]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = []
    names = list(m["retrieval"])
    keys = ["hit@1", "hit@5", "mrr@10", "ndcg@10"]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    w = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        vals = [m["retrieval"][n].get(k) or 0 for k in keys]
        ax.bar([x + i * w for x in range(len(keys))], vals, w, label=n)
    ax.set_xticks([x + w * (len(names) - 1) / 2 for x in range(len(keys))], keys)
    ax.set_ylim(0, 1)
    ax.set_title("Retrieval metrics per ablation")
    ax.legend(fontsize=8, loc="lower right")
    imgs.append(_plot_png(fig))
    plt.close(fig)
    lat = {k: v for k, v in latencies.items() if v}
    if lat:
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        ax.boxplot(list(lat.values()), orientation="horizontal")
        ax.set_yticks(range(1, len(lat) + 1), list(lat))
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_title("Latency per stage")
        imgs.append(_plot_png(fig))
        plt.close(fig)
    body = _md_to_html(md)
    pics = "".join(f'<img alt="plot" src="data:image/png;base64,{b}"/>' for b in imgs)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>guides-qa eval</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}"
            "</style></head><body>" + body + pics + "</body></html>")


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
        "report.html": render_html(metrics, md, latencies),
    }
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


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
