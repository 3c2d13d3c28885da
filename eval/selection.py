"""Facts in the prompt: does what the model reads hold every fact the answer needs? Measured without generating.

For each answerable and follow-up question of the dev set, the pipeline retrieves as it does when
answering (the same rewrite, retriever and reranker), builds the answer prompt the answerer would
build, and checks every ``answer_facts`` entry with ``eval.golden.states_fact`` against the prompt's
text. Two readings are compared: the default sentence selection at the evidence budget, and the
best passages whole (the ceiling a selection can reach from the same passages). Questions whose
facts the passages hold but the selection drops are listed, so a change to the selection can be
studied on the tune part and reported on the test part.

Usage::

    python -m eval.selection                       # both parts, budget 200 tokens
    python -m eval.selection --split tune --show   # the tune part, with the questions the selection drops
    python -m eval.selection --budget 260 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from answer.evidence import select_sentences
from answer.prompt import build_prompt
from core.settings import Settings, load_settings
from eval.golden import GoldenItem, load_golden, missing_facts

GOLDEN = Path(__file__).resolve().parent / "golden.jsonl"


@dataclass
class Reading:
    """What the model reads for one question under one way of choosing the evidence."""
    id: str
    part: str
    question: str
    text: str
    tokens: int
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing


def prompt_text(prompt) -> str:
    return "\n".join(m["content"] for m in prompt.messages)


def readings(pipe, items: list[GoldenItem], *, budget: int, progress: bool = False) -> dict[str, list[Reading]]:
    """'selection' and 'passages' readings for every item (retrieval done once per item)."""
    s: Settings = pipe.settings
    llm = pipe.llm
    answerer = pipe.answerer
    out: dict[str, list[Reading]] = {"selection": [], "passages": []}
    for i, it in enumerate(items, 1):
        rw = pipe.rewrite(it.turns)
        hits, _ = pipe.ranked(rw.query)
        asked = rw.query if rw.changed else it.question
        top = hits[:s.answer_passages]
        sel = select_sentences(asked, top, count_tokens=llm.count_tokens, budget_tokens=budget,
                               embedder=answerer.embedder)
        for name, excerpts in (("selection", sel.excerpts), ("passages", None)):
            prompt = build_prompt(asked, hits, llm=llm, max_passages=s.answer_passages,
                                  budget_tokens=answerer.prompt_budget, order=s.answer_passage_order,
                                  history=it.turns[:-1] if not rw.changed else (), excerpts=excerpts,
                                  header=s.answer_header)
            text = prompt_text(prompt)
            out[name].append(Reading(it.id, it.part, it.question, text, prompt.prompt_tokens,
                                     missing_facts(text, it.answer_facts)))
        if progress:
            print(f"\r  {i}/{len(items)} questions", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


def summary(rs: list[Reading]) -> dict:
    return {"complete": sum(r.complete for r in rs), "questions": len(rs),
            "prompt_tokens_p50": statistics.median(r.tokens for r in rs) if rs else None}


def dropped(sel: list[Reading], whole: list[Reading]) -> list[tuple[Reading, Reading]]:
    """Questions whose facts the whole passages hold and the selection does not."""
    return [(a, b) for a, b in zip(sel, whole) if b.complete and not a.complete]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.selection", description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=["tune", "test", "all"], default="all")
    ap.add_argument("--budget", type=int, default=None, help="evidence tokens (default: answer_context_tokens)")
    ap.add_argument("--show", action="store_true", help="list the questions whose facts the selection drops")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--golden", type=Path, default=GOLDEN)
    args = ap.parse_args(argv)

    from pipeline import Pipeline

    s = load_settings()
    budget = args.budget or s.answer_context_tokens
    items = [it for it in load_golden(args.golden) if it.answer_facts
             and (args.split == "all" or it.part == args.split)]
    pipe = Pipeline(s)
    try:
        rd = readings(pipe, items, budget=budget, progress=not args.json)
    finally:
        pipe.close()
    parts = ["tune", "test"] if args.split == "all" else [args.split]
    report = {"budget_tokens": budget, "passages": s.answer_passages, "by_part": {}}
    for part in parts + (["all"] if args.split == "all" else []):
        pick = (lambda r: True) if part == "all" else (lambda r, p=part: r.part == p)
        report["by_part"][part] = {k: summary([r for r in v if pick(r)]) for k, v in rd.items()}
    lost = dropped(rd["selection"], rd["passages"])
    report["dropped"] = [{"id": a.id, "part": a.part, "question": a.question, "missing": a.missing} for a, _ in lost]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Facts in the prompt (evidence budget {budget} tokens, {s.answer_passages} passages)")
    for part, row in report["by_part"].items():
        a, b = row["selection"], row["passages"]
        print(f"  {part:5} selection {a['complete']}/{a['questions']} (p50 {a['prompt_tokens_p50']:.0f} tok)   "
              f"passages whole {b['complete']}/{b['questions']} (p50 {b['prompt_tokens_p50']:.0f} tok)")
    if args.show:
        for a, _ in lost:
            print(f"\n[{a.part}] {a.id}: {a.question}\n  missing: {a.missing}\n  reads: {a.text[-900:]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
