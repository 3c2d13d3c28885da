"""The `guides` command: ingest, ask, serve, api, eval, practice."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core.text import line_range, plain_inline

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CliError(Exception):
    """Printed as 'error: ...' with exit status 2."""


def _settings(args):
    from core.settings import load_settings

    over = {}
    if getattr(args, "guides_dir", None):
        over["guides_dir"] = Path(args.guides_dir)
    if getattr(args, "data_dir", None):
        over["data_dir"] = Path(args.data_dir)
    if getattr(args, "top_k", None):
        over["top_k"] = args.top_k
    return load_settings(**over)


def cmd_ingest(args) -> int:
    from ingest.pipeline import run_ingest

    s = _settings(args)
    summary = run_ingest(s, rebuild=args.rebuild, progress=not args.quiet)
    print(summary.render())
    if summary.n_chunks == 0:
        print(f"error: no chunks were indexed; add .md/.markdown/.txt guides to {s.guides_dir}", file=sys.stderr)
        return 1
    return 0


def _practice_grader(s):
    """The grader the settings choose (practice.grader_for), the embedding model loaded only when it needs one."""
    from practice import grader_for

    embedder = None
    if s.practice_grader == "embed":
        from ingest.embed import load_embedder

        embedder = load_embedder(s.embed_model)
    return grader_for(s, embedder=embedder)


def _print_grade(g) -> None:
    print(f"\nScore: {g.score:.0%}  ({len(g.covered)} of {len(g.points)} points covered"
          + (f", {len(g.contradicted)} contradicted" if g.contradicted else "") + ")"
          + (f"  [{g.note}]" if g.note else ""))
    for p in g.covered:
        print(f"  ✓ {p.point.text}")
    for p in g.contradicted:
        print(f"  ✗ {p.point.text}  ({line_range(p.point.lines)})\n      {p.reason}")
    for p in g.missed:
        print(f"  · missed: {p.point.text}  ({line_range(p.point.lines)})")
    print(f"Reference: {g.entry.guide}, {line_range(g.entry.answer_lines)}")


def cmd_practice(args) -> int:
    import time as _time

    from ingest.bank import BankError
    from practice import find_entry, load_bank, store_path
    from practice.schedule import PracticeStore, PracticeStoreError, filter_entries

    s = _settings(args)
    profile = args.profile or s.practice_profile
    try:
        bank = filter_entries(load_bank(s), guide=args.guide, section=args.section)
        if not bank:
            raise BankError(f"No practice question matches --guide {args.guide!r} / --section {args.section!r}; "
                            "`guides practice list` shows them all.")
        if args.pcmd == "list":
            for e in bank:
                if args.json:
                    print(json.dumps({"id": e.id, "question": e.question, "guide": e.guide, "section": e.section,
                                      "lines": list(e.answer_lines)}, ensure_ascii=False))
                else:
                    print(f"{e.id}  {e.question}  ({e.guide}, {line_range(e.answer_lines)})")
            return 0
        store = PracticeStore(store_path(s))
        try:
            if args.pcmd == "stats":
                c = store.counts(profile, bank)
                if args.json:
                    print(json.dumps({"profile": profile, **c}))
                else:
                    print(f"Profile {profile!r}: {c['questions']} questions, {c['seen']} seen, {c['due']} due now, "
                          f"{c['new']} new, {c['mastered']} mastered.")
                return 0
            grader = _practice_grader(s)
            if args.pcmd == "grade":
                entry = find_entry(bank, args.id)
                answer = sys.stdin.read() if args.answer == "-" else args.answer
                if answer is None:
                    raise CliError("give the answer with --answer TEXT, or --answer - to read it from standard input.")
                t0 = _time.perf_counter()
                g = grader(entry, answer)
                ms = (_time.perf_counter() - t0) * 1000
                if not args.no_record:
                    store.record(profile, g)
                note = _practice_feedback(s, g)
                if args.json:
                    print(json.dumps({**g.to_json(), "grade_ms": round(ms, 1), "feedback": note}, ensure_ascii=False))
                else:
                    _print_grade(g)
                    if note:
                        print(f"Feedback (written by the model from the guide's text): {note}")
                return 0
            return _drill(bank, store, profile, grader)
        finally:
            store.close()
    except (BankError, PracticeStoreError) as e:
        raise CliError(str(e)) from None


def _practice_feedback(s, g) -> str | None:
    """The LLM's feedback on what ``g`` missed, when setting practice_feedback is on."""
    if not s.practice_feedback:
        return None
    from core.llm import load_llm
    from practice.feedback import feedback

    llm = load_llm(s)
    try:
        return feedback(llm, g)
    finally:
        close = getattr(llm, "close", None)
        if close:
            close()


def _drill(bank, store, profile, grader) -> int:
    """The interactive drill: a due (or new) question, the person's answer, the grade, the next."""
    import time as _time

    c = store.counts(profile, bank)
    print(f"Practice ({profile}): {c['due']} due, {c['new']} new, {c['mastered']} mastered of {c['questions']}. "
          "Answer in your own words; an empty line ends the answer; Ctrl-D quits.")
    done = 0
    try:
        while True:
            queue = store.due(profile, bank)
            if not queue:
                print("Nothing is due: come back tomorrow, or pick a guide with --guide.")
                return 0
            e = queue[0]
            print(f"\n[{e.section}]\n{e.question}")
            lines = []
            while True:
                line = input("> " if not lines else "  ")
                if not line.strip():
                    break
                lines.append(line)
            g = grader(e, "\n".join(lines))
            slot = store.record(profile, g)
            _print_grade(g)
            print(f"Next time: in {max(1, round((slot.due - _time.time()) / 86400))} day(s).")
            done += 1
    except (EOFError, KeyboardInterrupt):
        print(f"\n{done} answered this session; your progress is saved.")
        return 0


def _read_batch(path: str) -> list[dict]:
    items = []
    src = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with src:
        for n, line in enumerate(src, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CliError(f"{path} line {n}: not valid JSON ({e.msg}); each line must be "
                               f'{{"id": ..., "turns": ["question", ...]}}') from None
            if not isinstance(obj, dict) or not isinstance(obj.get("turns"), list) or not obj["turns"]:
                raise CliError(f"{path} line {n}: needs a non-empty list 'turns' of questions")
            items.append({"id": obj.get("id", n), "turns": obj["turns"], "line": n})
    return items


STATUS_MARK = {"verified": "✓ verified", "contradicted": "✗ contradicted", "unverified": "? not verified",
               "too_short": "· too short to check"}


def cmd_ask(args) -> int:
    from pipeline.qa import Pipeline

    s = _settings(args)
    pipe = Pipeline(s)
    try:
        return _ask(args, pipe)
    finally:
        pipe.close()


def _ask(args, pipe) -> int:
    from pipeline.qa import InputError

    if args.batch:
        for it in _read_batch(args.batch):
            try:
                if args.retrieve_only:
                    rec = pipe.retrieve(it["turns"], id=it["id"], mode=args.mode).to_json()
                else:
                    rec = pipe.ask(it["turns"], id=it["id"]).to_json()
            except InputError as e:
                rec = {"id": it["id"], "question": it["turns"][-1] if it["turns"] else None,
                       "error": f"line {it['line']}: {e}"}
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        return 0
    if not args.question:
        raise CliError('Give a question, e.g. guides ask "what is LoRA?", or --batch FILE.')
    try:
        if args.retrieve_only:
            res = pipe.retrieve([args.question], mode=args.mode)
            if args.json:
                print(json.dumps(res.to_json(), ensure_ascii=False, indent=2))
            else:
                _print_hits(res.hits)
                print("timings (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in res.timings_ms.items()))
            return 0
        if args.json:
            print(json.dumps(pipe.ask([args.question]).to_json(), ensure_ascii=False, indent=2))
            return 0
        return _stream_answer(pipe, [args.question])
    except InputError as e:
        raise CliError(str(e)) from None


def _print_hits(hits) -> None:
    for h in hits:
        p = h.payload
        print(f"[{h.rank}] {p['section']}  ({p['guide']}, lines {p['lines'][0]}-{p['lines'][1]}, score {h.score:.4f})")
        snippet = " ".join(p["text"].split())
        print(f"    {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


def _print_quote_entry(e: dict, mark: str = "") -> None:
    """One answer.answerer.quote_entry: [n] ``mark`` guide › section (file, lines a-b), then the quote."""
    print(f"[{e['n']}] {mark}{e['header']} ({e['guide']}, {line_range(e['lines'])})")
    print(f"  > {' '.join(plain_inline(e['quote']).split())}")


def _stream_answer(pipe, turns: list[str]) -> int:
    from answer.answerer import ANSWER_STATES, Checking, describe_status, Evidence, Token

    result = None
    streamed = []
    for ev in pipe.ask_stream(turns):
        if isinstance(ev, Token):
            streamed.append(ev.text)
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        elif isinstance(ev, Evidence):
            q = ev.quote
            print(f"The closest sentence in the guides ({ev.header}, {line_range(q.lines)}):\n"
                  f"  > {' '.join(plain_inline(q.text).split())}\n")
        elif isinstance(ev, Checking):
            print(f"\n(checking {ev.sentences} sentence(s) against the guides…)", end="", flush=True)
        else:
            result = ev
    a = result.answer
    print()
    if not a.refused and a.answer.strip() != "".join(streamed).strip():
        print("\nWith citations:\n" + a.answer)
    elif a.refused and a.answer.strip() != "".join(streamed).strip():
        # The model's draft streamed, then failed the checks: say so, as the app does by replacing it.
        print(f"\nThe draft above is withdrawn ({a.refusal_reason}).\n{a.answer}")
    if not a.refused and a.status in ANSWER_STATES:
        print(f"\nAnswer {describe_status(a.status, a.missing_parts)}")
    for w in a.warnings:
        print(f"note: {w}")
    if a.evidence or a.left_out:
        print("\nFrom the guides:")
        for e in a.evidence:
            why = [r for r in e["reasons"] if r != "too short to check"]
            _print_quote_entry(e, f"{STATUS_MARK.get(e['status'], e['status'])}"
                                  + (f" ({'; '.join(why)})" if why else "") + " ")
        for e in a.left_out:
            _print_quote_entry(e, "not in the answer ")
    if a.citations or a.passages:
        print("\nSources:")
        cited = {c.n: c for c in a.citations}
        for p in a.passages:
            pl = p.hit.payload
            c = cited.get(p.n)
            mark = "" if c is None else " " + STATUS_MARK.get(c.status, c.status)
            print(f"[{p.n}] {pl['section']} ({pl['guide']}, {line_range(pl['lines'])}){mark}")
    print("timings (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items()))
    return 0


def cmd_train_reranker(args) -> int:
    from retrieval.training.fit import train_reranker

    s = _settings(args)
    if args.write_data == "bank":
        from retrieval.training.bank import BANK_DATA, write_bank_data

        rows, meta = write_bank_data(s)
        st = meta["stats"]
        print(f"Wrote {len(rows)} training pairs from the {st['questions']} bank questions to {BANK_DATA} (dropped "
              f"{st['dropped_dev']} too close to a dev question, {len(st['no_chunk'])} with no chunk holding the answer)")
        return 0
    if args.write_data:
        from retrieval.trained import DATA_SOURCES
        from retrieval.training.data import write_training_data

        small = args.write_data == "llm-small"
        out = DATA_SOURCES[args.write_data]
        rows, meta = write_training_data(s, out=out, progress=not args.quiet,
                                         llm_name="bundled-small" if small else None,
                                         skip_chunks_of=[DATA_SOURCES["llm"]] if small else (),
                                         command=f"guides train-reranker --write-data {args.write_data}")
        st = meta["stats"]
        print(f"Wrote {len(rows)} training questions for {meta['chunks_asked']} chunks to {out} "
              f"({st['questions_written']} written by {meta['llm']}; dropped {st['dropped_dev']} too close to a dev "
              f"question, {st['dropped_not_in_top20']} not found by the hybrid search in its top 20)")
        return 0
    if args.measure:
        print(json.dumps(_measure_reranker(s, args.measure, args.model, quiet=args.quiet), indent=1))
        return 0
    path = train_reranker(s, progress=not args.quiet, tiny=args.tiny)
    print(f"Reranker ready: {path}")
    return 0


def _measure_reranker(s, part: str, model: str | None, *, quiet: bool = False) -> dict:
    """Score the hybrid candidates of one part of the dev set with the reranker once; on 'tune', every
    variant (K, fusion, weight) and the cross-validated choice; on 'test', only the settings' variant."""
    from eval.golden import load_golden, select_part
    from eval.retrieval import qrels_for
    from pipeline.qa import Pipeline
    from retrieval.rerank import SentenceTransformersCrossEncoder, load_reranker
    from retrieval.training import tune
    from retrieval.training.data import DEV_SET

    items = select_part(load_golden(DEV_SET), part)                 # the dev set the training data was cleaned against
    pipe = Pipeline(s.model_copy(update={"reranker": "off"}))
    try:
        rr = SentenceTransformersCrossEncoder(model, precision=s.reranker_precision) if model else load_reranker(s)
        if rr is None:
            raise CliError("--measure needs a reranker: set GUIDES_RERANKER (e.g. trained) or pass --model FOLDER.")
        chunks = pipe.index.refresh().chunks()
        qrels = qrels_for(items, [(c.chunk_id, c.text) for c in chunks])
        depth = 30 if part == "tune" else max(tune.DEPTH, s.rerank_candidates)      # the metrics read the top 10
        scored = tune.score_questions(rr, [(i.id, pipe.search_query(i.turns)) for i in items if i.id in qrels],
                                      pipe.searcher, qrels, depth=depth, progress=not quiet)
    finally:
        pipe.close()
    out = {"part": part, "reranker": rr.name, "questions": len(scored.questions),
           "hybrid": tune.metrics(scored.questions, None), "score_ms_all_candidates": scored.latency()}
    if part == "tune":
        vs = tune.variants([5, 10, 20, 30], ["weight", "rrf"], [0.2, 0.3, 0.5, 0.7, 0.8, 1.0])
        results = tune.grid(scored.questions, vs)
        best = tune.choose(results)
        out.update(grid=[{"variant": v.label(), **m} for v, m in results], chosen=best.label(),
                   cross_validated=tune.cross_validate(scored.questions, vs),
                   rerank_ms_at_chosen_k=tune.latency(rr, scored, best.k))
    else:
        v = tune.Variant(s.rerank_candidates, s.rerank_fusion, s.rerank_weight)
        m = tune.metrics(scored.questions, v)
        out.update(variant=v.label(), metrics=m, rule=tune.default_rule(out["hybrid"], m),
                   rerank_ms=tune.latency(rr, scored, v.k))
    return out


def prepare(s, *, quiet: bool = False) -> None:
    """Build whatever the app needs and is missing or stale: index, reranker, model file."""
    from ingest.pipeline import run_ingest

    print("[1/3] Index", flush=True)
    summary = run_ingest(s, progress=not quiet)
    print(summary.render(), flush=True)
    print("[2/3] Reranker", flush=True)
    if s.reranker == "trained":
        from retrieval.trained import trained_model_dir
        from retrieval.training.fit import train_reranker

        path = trained_model_dir(s)
        if (path / "reranker.json").is_file():
            print(f"up to date: {path}")
        else:
            print("missing or stale for this index: training it (a few minutes on 2 cores)", flush=True)
            train_reranker(s, progress=not quiet)
    else:
        print(f"GUIDES_RERANKER={s.reranker}: nothing to build")
    print("[3/3] LLM", flush=True)
    from core.bundled import BUNDLED_MODELS, assemble_bundled_model

    if s.llm in BUNDLED_MODELS:
        print(f"model file ready: {assemble_bundled_model(s.data_dir, s.llm)}")
        if s.llm_speculative == "draft":
            print(f"draft model ready: {assemble_bundled_model(s.data_dir, 'bundled-small')}")
    else:
        print(f"GUIDES_LLM={s.llm}: nothing to build")


def cmd_prepare(args) -> int:
    prepare(_settings(args), quiet=args.quiet)
    return 0


def cmd_check(args) -> int:
    """Verify the data folder; exit 1 when anything is damaged."""
    from guides_qa.check import check_data, render

    s = _settings(args)
    rows = check_data(s, quick=args.quick)
    if args.json:
        print(json.dumps([{"what": r.what, "path": str(r.path), "state": r.state, "detail": r.detail, "fix": r.fix}
                          for r in rows], ensure_ascii=False, indent=1))
    else:
        print(render(rows))
    return 1 if any(r.bad for r in rows) else 0


def cmd_api(args) -> int:
    """The OpenAI-compatible API (guides_qa.api) until SIGTERM or Ctrl-C."""
    from guides_qa.api import check_bind, serve
    from guides_qa.logs import setup_logging

    s = _settings(args)
    host, port = args.host or s.api_host, args.port or s.api_port
    try:
        check_bind(host, s.api_key_value())
    except ValueError as e:
        raise CliError(str(e)) from None
    setup_logging(s)
    if not args.no_prepare:
        prepare(s)
    print(f"guides-qa API on http://{host}:{port}/v1 (model 'guides-qa'"
          + (", key required" if s.api_key_value() else "") + "); Ctrl-C stops it.", flush=True)
    serve(s, host=host, port=port)
    return 0


def cmd_serve(args) -> int:
    """Prepare, then become Streamlit (os.execve): SIGTERM/SIGINT reach the app itself, nothing is left behind."""
    import logging
    import time

    from guides_qa.logs import setup_logging

    s = _settings(args)
    path = setup_logging(s)
    log = logging.getLogger("guides_qa.serve")
    log.info("guides serve: data folder %s, log file %s", s.data_dir.resolve(), path)
    if not args.no_prepare:
        t = time.monotonic()
        prepare(s)
        log.info("start-up: prepared index, reranker and model file in %.1f s", time.monotonic() - t)
    app = Path(__file__).resolve().parent.parent / "app.py"
    if not app.exists():
        raise CliError(f"{app} not found")
    # guides_qa.ui.serve starts the model warm-up, then runs `streamlit run app.py` in the same process.
    cmd = [sys.executable, "-m", "guides_qa.ui.serve", "--server.headless", "true",
           "--server.address", args.host, "--server.port", str(args.port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    env = dict(os.environ)
    env["GUIDES_DATA_DIR"] = str(s.data_dir.resolve())
    env["GUIDES_GUIDES_DIR"] = str(s.guides_dir.resolve())
    log.info("start-up: starting the app on http://%s:%s/ (pid %d becomes Streamlit)", args.host, args.port,
             os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    for h in logging.getLogger("guides_qa").handlers:
        h.flush()
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def cmd_feedback_export(args) -> int:
    from guides_qa.feedback import FeedbackError, FeedbackStore, export

    try:
        n = export(FeedbackStore.for_settings(_settings(args)).path, args.out, fmt=args.format)
    except FeedbackError as e:
        raise CliError(str(e)) from None
    print(f"exported {n} rows", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    import json as _json

    from eval.golden import GoldenError
    from eval.report import changed_questions, compare
    from eval.runner import run_eval

    from eval.judge_cache import CACHE_FILE, JudgeCacheError
    from eval.readme import ReadmeError, update_readme
    from eval.runner import parse_judge_sample

    if args.readme_from:
        try:
            print(update_readme(Path(args.readme_from), Path(args.readme or "README.md")))
        except ReadmeError as e:
            raise CliError(str(e)) from None
        return 0
    s = _settings(args)
    out = Path(args.out)
    try:
        parse_judge_sample(args.judge_sample or s.judge_sample)
        parse_judge_sample(args.peer_sample or s.peer_sample, flag="--peer-sample")
    except ValueError as e:
        raise CliError(str(e)) from None
    old = None
    if args.compare:       # read before the run: a bad path should not cost a full eval
        try:
            old = _json.loads(Path(args.compare).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CliError(f"--compare {args.compare}: cannot read it as a metrics.json ({e}).") from None
    try:
        metrics = run_eval(s, Path(args.golden), out=out, limit=args.limit, retrieve_only=args.retrieve_only,
                           progress=not args.quiet, split=args.split, judge_sample=args.judge_sample,
                           judge_cache=False if args.no_judge_cache else None,
                           peer=False if args.no_peer else None, peer_sample=args.peer_sample)
    except (GoldenError, JudgeCacheError) as e:
        raise CliError(str(e)) from None
    except KeyboardInterrupt:
        cache = s.data_dir / "eval" / CACHE_FILE
        print(f"\nInterrupted: nothing was written to {out}. Every judgement made so far is kept in {cache}; run the "
              f"same command again to resume (cached judgements are reused, answers are regenerated).", file=sys.stderr)
        return 130
    print((out / "report.md").read_text())
    print(f"Wrote {out}/report.md, report.html, metrics.json, questions.jsonl")
    if args.readme:
        print(update_readme(out / "metrics.json", Path(args.readme)))
    if old is not None:
        print(f"\nChange against {args.compare}:\n" + compare(old, metrics))
        changed = changed_questions(Path(args.compare).with_name("questions.jsonl"), out / "questions.jsonl")
        print("\n" + changed)
    return 0


def cmd_bench_index(args) -> int:
    from eval.bench_index import KEYS, describe, run_bench

    if args.points < 1:
        raise CliError(f"--points must be at least 1, got {args.points}")
    if not args.json:
        print(f"Benchmarking a synthetic index: {describe(args.points)}", flush=True)
    r = run_bench(args.points, n_queries=args.queries, progress=not args.json)
    if args.json:
        print(json.dumps({k: round(r[k], 4) for k in KEYS}))
    else:
        print(f"build_s {r['build_s']:.2f}  open_s {r['open_s']:.3f}  rss_mb {r['rss_mb']:.0f}  "
              f"p50_ms {r['p50_ms']:.2f}  p95_ms {r['p95_ms']:.2f}  ({args.queries} hybrid queries)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="guides", description="Cited question answering over the study guides.")
    sub = p.add_subparsers(dest="cmd", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--guides-dir", help="folder of guides (default: setting guides_dir, data/guides)")
    common.add_argument("--data-dir", help="folder for the index and models (default: data)")

    pi = sub.add_parser("ingest", parents=[common], help="index the guides (incremental)")
    pi.add_argument("--rebuild", action="store_true", help="re-embed everything")
    pi.add_argument("--quiet", action="store_true", help="no progress bars")
    pi.set_defaults(func=cmd_ingest)

    pa = sub.add_parser("ask", parents=[common], help="ask a question (or --batch FILE)")
    pa.add_argument("question", nargs="?")
    pa.add_argument("--retrieve-only", action="store_true", help="print the ranked passages, no LLM")
    pa.add_argument("--json", action="store_true", help="one JSON object per question")
    pa.add_argument("--batch", metavar="FILE", help='JSONL of {"id", "turns"}; "-" for stdin; writes JSONL')
    pa.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid", help="retrieval mode")
    pa.add_argument("--top-k", type=int, help="passages to return")
    pa.set_defaults(func=cmd_ask)

    pe = sub.add_parser("eval", parents=[common], help="score retrieval and answers on a golden set")
    pe.add_argument("--golden", default="eval/golden.jsonl", help="JSONL golden set (default eval/golden.jsonl)")
    pe.add_argument("--limit", type=int, help="only the first N questions")
    pe.add_argument("--split", choices=["tune", "test", "all"], default="all",
                    help="run one part of the golden set's fixed tune/test split (default all; see eval/golden.py)")
    pe.add_argument("--retrieve-only", action="store_true", help="retrieval metrics only, no LLM")
    pe.add_argument("--out", default="eval/runs/latest", help="output folder (default eval/runs/latest)")
    pe.add_argument("--compare", metavar="OLD_METRICS_JSON", help="print deltas against an earlier metrics.json")
    pe.add_argument("--quiet", action="store_true", help="no progress bar")
    pe.add_argument("--judge-sample", metavar="N|all",
                    help="answers the ragas judge scores: a fixed stratified sample of N, or all (default: setting "
                         "judge_sample, 24)")
    pe.add_argument("--no-peer", action="store_true",
                    help="skip the peer (llama-index's default query engine over the same retriever and model)")
    pe.add_argument("--peer-sample", metavar="N|all",
                    help="questions the peer answers: a fixed stratified sample of N, or all (default: setting "
                         "peer_sample, 24)")
    pe.add_argument("--no-judge-cache", action="store_true", help="judge afresh, ignoring stored judgements")
    pe.add_argument("--readme", nargs="?", const="README.md", metavar="FILE",
                    help="after the run, rewrite the measured table of FILE (default README.md) from metrics.json")
    pe.add_argument("--readme-from", metavar="METRICS_JSON",
                    help="no run: rewrite the README's measured table from this metrics.json (with --readme FILE)")
    pe.set_defaults(func=cmd_eval)

    pt = sub.add_parser("train-reranker", parents=[common], help="train the in-domain cross-encoder (offline)")
    pt.add_argument("--tiny", action="store_true", help="a few steps only (for tests)")
    pt.add_argument("--write-data", nargs="?", const="llm", choices=["bank", "llm", "llm-small"],
                    help="write one source of training data into retrieval/data/, then stop: bank (the guides' own "
                         "questions, seconds), llm (the bundled 1.5B writes questions, slow; the default) or llm-small "
                         "(the 0.5B, for chunks llm did not cover)")
    pt.add_argument("--measure", choices=["tune", "test"],
                    help="measure the reranker on one part of the dev set: tune (every K, fusion and weight, and "
                         "their cross-validated choice) or test (only the settings' K, fusion and weight), then stop")
    pt.add_argument("--model", help="with --measure: a CrossEncoder folder instead of GUIDES_RERANKER")
    pt.add_argument("--quiet", action="store_true", help="no progress bars")
    pt.set_defaults(func=cmd_train_reranker)

    pp = sub.add_parser("prepare", parents=[common], help="build what is missing: index, reranker, model file")
    pp.add_argument("--quiet", action="store_true", help="no progress bars")
    pp.set_defaults(func=cmd_prepare)

    pb = sub.add_parser("bench-index", help="build a synthetic index of N chunks and time hybrid queries on it")
    pb.add_argument("--points", type=int, required=True, help="chunks in the synthetic index")
    pb.add_argument("--queries", type=int, default=200, help="hybrid queries to time (default 200)")
    pb.add_argument("--json", action="store_true", help="one JSON object: build_s, open_s, rss_mb, p50_ms, p95_ms")
    pb.set_defaults(func=cmd_bench_index)

    pc = sub.add_parser("check", parents=[common], help="verify the data folder: index, models, databases")
    pc.add_argument("--quick", action="store_true", help="sizes only, no checksums")
    pc.add_argument("--json", action="store_true", help="one JSON list of rows")
    pc.set_defaults(func=cmd_check)
    pi2 = sub.add_parser("api", parents=[common], help="serve an OpenAI-compatible API (chat completions, search)")
    pi2.add_argument("--host", help="address to listen on (default: setting api_host, 127.0.0.1)")
    pi2.add_argument("--port", type=int, help="port (default: setting api_port, 8000)")
    pi2.add_argument("--no-prepare", action="store_true", help="do not build a missing index or model file first")
    pi2.set_defaults(func=cmd_api)
    pr = sub.add_parser("practice", parents=[common],
                        help="drill the guides' own interview questions (graded against the guide's answer)")
    pr.add_argument("--profile", help="whose history and schedule (default: setting practice_profile)")
    pr.add_argument("--guide", help="only questions of this guide (its file name or a part of it)")
    pr.add_argument("--section", help="only questions whose section path contains this")
    pr.set_defaults(func=cmd_practice, pcmd="drill")
    prs = pr.add_subparsers(dest="pcmd")
    prl = prs.add_parser("list", help="the questions: id, question, guide, section, lines")
    prl.add_argument("--json", action="store_true", help="one JSON object per line")
    prg = prs.add_parser("grade", help="grade one answer to question ID")
    prg.add_argument("id", help="a question id (from `guides practice list`)")
    prg.add_argument("--answer", help="the answer; '-' reads it from standard input")
    prg.add_argument("--json", action="store_true", help="one JSON object")
    prg.add_argument("--no-record", action="store_true", help="do not store the attempt in the schedule")
    prt = prs.add_parser("stats", help="due, new and mastered counts")
    prt.add_argument("--json", action="store_true", help="one JSON object")
    pf = sub.add_parser("feedback", help="feedback people gave in the app").add_subparsers(dest="fcmd", required=True)
    px = pf.add_parser("export", parents=[common], help="write the feedback log as JSONL or CSV")
    px.add_argument("out", nargs="?", default="-", help="output file ('-' = stdout)")
    px.add_argument("--format", choices=["jsonl", "csv"], help="default: from the file name, else jsonl")
    px.set_defaults(func=cmd_feedback_export)

    ps = sub.add_parser("serve", parents=[common], help="build what is missing, then start the chat app")
    ps.add_argument("--host", default="127.0.0.1")
    ps.add_argument("--port", type=int, default=8501)
    ps.add_argument("--no-prepare", action="store_true", help="start the app without building anything first")
    ps.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.settings import SettingsError
    from ingest.store import IndexError_

    known: tuple = (CliError, SettingsError, IndexError_, FileNotFoundError)
    try:
        from core.llm import LLMError
        from retrieval.rerank import RerankerError
        from retrieval.training.data import DataError
        from retrieval.training.fit import TrainingError

        known += (LLMError, RerankerError, TrainingError, DataError)
    except ImportError:
        pass
    try:
        return args.func(args)
    except known as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was published; the previous index (if any) is still in use", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
