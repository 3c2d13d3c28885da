import json
import math
from pathlib import Path

import pytest

from eval.golden import GoldenError, is_relevant, load_golden
from eval.report import compare
from eval.retrieval import first_relevant_rank, qrels_for, retrieval_metrics

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, lines):
    p = tmp_path / "g.jsonl"
    p.write_text("".join(json.dumps(l) + "\n" if isinstance(l, dict) else l + "\n" for l in lines))
    return p


GOOD = {"id": "a", "kind": "answerable", "turns": ["what is lora?"], "evidence": ["low-rank"], "answer_keywords": ["rank"],
        "answer_facts": [["low rank", "low-rank"]]}


@pytest.mark.parametrize("bad,msg", [
    ({k: v for k, v in GOOD.items() if k != "evidence"}, "line 2: missing field 'evidence'"),
    ({**GOOD, "id": "b", "evidence": []}, "line 2: an answerable question needs at least one evidence phrase"),
    ({**GOOD, "id": "b", "kind": "maybe"}, "line 2: kind 'maybe'"),
    ({**GOOD, "id": "b", "turns": []}, "line 2: 'turns' must be a non-empty list"),
    ({**GOOD, "id": "b", "kind": "followup"}, "line 2: a followup needs at least two turns"),
    ({**GOOD}, "line 2: duplicate id 'a'"),
    ("{oops", "line 2: not valid JSON"),
])
def test_bad_golden_line_is_named(tmp_path, bad, msg):
    with pytest.raises(GoldenError, match=msg):
        load_golden(write(tmp_path, [GOOD, bad]))


def test_repo_golden_set_is_valid_and_big_enough():
    items = load_golden(REPO / "eval" / "golden.jsonl")
    kinds = [i.kind for i in items]
    assert len(items) >= 60 and kinds.count("unanswerable") >= 6 and kinds.count("followup") >= 4


def test_relevance_normalises_both_sides():
    assert is_relevant("QLoRA uses **4-bit NormalFloat** (NF4)", ["4 bit normalfloat"])
    assert not is_relevant("LoRA", ["low-rank"])


def test_metrics_on_a_hand_checked_run():
    qrels = {"q1": {"d1"}, "q2": {"d9"}, "q3": {"d2", "d3"}}
    runs = {"q1": ["d1", "d2"], "q2": ["d1", "d2", "d3"], "q3": ["d5", "d3", "d2"]}
    m = retrieval_metrics(runs, qrels)
    assert m["hit@1"] == pytest.approx(1 / 3)
    assert m["hit@5"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["recall@5"] == pytest.approx((1 + 0 + 1) / 3)
    assert first_relevant_rank(runs["q3"], qrels["q3"]) == 2


def test_question_with_no_relevant_chunk_counts_as_miss():
    m = retrieval_metrics({"q1": ["d1"], "q2": ["d1"]}, {"q1": {"d1"}, "q2": set()})
    assert m["hit@1"] == 0.5


def test_qrels_cover_every_chunk():
    items = load_golden(REPO / "eval" / "golden.jsonl")[:3]
    chunks = [("c1", items[0].evidence[0].upper() + " and more"), ("c2", "nothing")]
    assert qrels_for(items, chunks)[items[0].id] == {"c1"}


def test_compare_prints_deltas():
    old = {"retrieval": {"hybrid": {"hit@1": 0.5}}, "latency_ms": {"search": {"p50": 10.0}}}
    new = {"retrieval": {"hybrid": {"hit@1": 0.6}}, "latency_ms": {"search": {"p50": 8.0}}}
    out = compare(old, new)
    assert "retrieval.hybrid.hit@1" in out and "+0.100" in out and "▲" in out
    assert "latency_ms.search.p50" in out and "-2.000" in out


@pytest.mark.usefixtures("eval_cli_env")
def test_quick_eval_end_to_end(tmp_path):
    """`guides eval --retrieve-only` on a few questions, through the real CLI code path."""
    from guides_qa.cli import main

    out = tmp_path / "run"
    assert main(["eval", "--retrieve-only", "--limit", "6", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["retrieval"]) == {"bm25", "dense", "hybrid"}
    assert m["run"]["n_questions"] == 6
    qs = [json.loads(l) for l in (out / "questions.jsonl").read_text().splitlines()]
    assert len(qs) == 6 and "first_relevant_rank[hybrid]" in qs[0]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert main(["eval", "--retrieve-only", "--limit", "3", "--out", str(tmp_path / "r2"), "--quiet",
                 "--compare", str(out / "metrics.json")]) == 0


def test_one_answered_question_with_fake_llm_and_fake_judge(tmp_path, guides_copy, fake_settings):
    from eval.runner import run_eval
    from pipeline.qa import Pipeline
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest

    s = fake_settings(guides_copy, judge="fake")
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    golden = tmp_path / "one.jsonl"
    golden.write_text(json.dumps({"id": "q", "kind": "answerable", "turns": ["What does the KV cache store?"],
                                  "evidence": ["KV cache"], "answer_keywords": ["cache"],
                                  "answer_facts": [["cache"]]}) + "\n"
                      + json.dumps({"id": "u", "kind": "unanswerable", "turns": ["What is the capital of Mongolia?"],
                                    "evidence": [], "answer_keywords": []}) + "\n")
    pipe = Pipeline(s, embedder=HashEmbedder())
    try:
        m = run_eval(s, golden, out=tmp_path / "out", pipeline=pipe, progress=False)
    finally:
        pipe.close()
    a = m["answers"]
    assert a["judge"].startswith("fake")
    assert a["answered_questions"] == 2
    r = a["ragas"]
    if r["judged"]:
        assert r["faithfulness"] == 1.0 and r["judge_failures"] == 0   # the fake judge's one statement is supported
    for k in ("faithfulness", "answer_relevancy", "context_precision", "judged", "from_cache", "sample"):
        assert k in r
    for k in ("keyword_recall", "citation_verified_share", "refusal_accuracy_unanswerable",
              "false_refusal_rate_answerable", "correctness", "verified_precision", "verified_answers",
              "false_refusals", "refused_unanswerable"):
        assert k in a
    q = [json.loads(l) for l in (tmp_path / "out" / "questions.jsonl").read_text().splitlines()]
    assert "answer" in q[0] and isinstance(q[0]["citations"], list)
    assert {"correct", "missing_facts", "unsupported_numbers", "fully_verified"} <= set(q[0])
    assert q[1]["correct"] == q[1]["refused"]                       # unanswerable: correct means refused
    assert m["by_part"]["all"]["answers"]["correctness"] == a["correctness"]
    assert "first_token" in m["latency_ms"] or q[0]["refused"]
    assert "Answers" in (tmp_path / "out" / "report.md").read_text()
    # the peer (plain llama-index RAG, same retriever and model) answered the same questions, side by side
    peer = m["peer"]
    assert "RetrieverQueryEngine" in peer["pipeline"] and sorted(peer["sample"]["ids"]) == ["q", "u"]
    for k in ("correctness", "correct_answers", "answered_questions", "refused_unanswerable", "false_refusals",
              "wrong_answers", "seconds_p50"):
        assert k in peer and k in peer["ours"]
    assert peer["answered_questions"] == peer["ours"]["answered_questions"] == 2
    assert peer["ours"]["correct_answers"] == a["correct_answers"]
    assert {r["id"] for r in q if "peer" in r} == {"q", "u"}
    assert q[0]["peer"]["answer"] and q[0]["peer"]["chunk_ids"]
    assert q[1]["peer"]["correct"] == q[1]["peer"]["refused"]
    assert "Against the peer: plain llama-index RAG" in (tmp_path / "out" / "report.md").read_text()


def test_eval_without_the_peer_has_no_peer_row(tmp_path, guides_copy, fake_settings):
    from eval.runner import run_eval
    from pipeline.qa import Pipeline
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest

    s = fake_settings(guides_copy, judge="off")
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    pipe = Pipeline(s, embedder=HashEmbedder())
    try:
        m = run_eval(s, REPO / "eval" / "golden.jsonl", out=tmp_path / "out", pipeline=pipe, progress=False,
                     limit=8, peer=False)
        assert "peer" not in m and "peer" not in m["run"]["stage_seconds"]
        m = run_eval(s, REPO / "eval" / "golden.jsonl", out=tmp_path / "out2", pipeline=pipe, progress=False,
                     limit=8, peer_sample=3)
    finally:
        pipe.close()
    assert len(m["peer"]["sample"]["ids"]) == 3 and m["peer"]["ours"]["answered_questions"] == 3


@pytest.mark.parametrize("reply,declined", [
    ("The context does not provide information about the capital of Mongolia.", True),
    ("The provided context doesn't mention Mongolia.", True),
    ("This is not mentioned in the given context.", True),
    ("There is no information about that in the context.", True),
    ("I don't know.", True),
    ("LoRA freezes the weights. The context does not say how fast it is.", False),   # a right answer first
    ("The KV cache stores keys and values.", False),
])
def test_peer_refusals_are_read_from_its_first_sentence(reply, declined):
    from eval.peer import peer_declined

    assert peer_declined(reply) is declined


def test_readme_table_shows_the_peer_beside_the_project():
    from eval.readme import render_table

    both = {"answered_questions": 4, "answerable": 3, "unanswerable": 1, "correct_answers": 2, "wrong_answers": 1,
            "refused_unanswerable": 1, "seconds_p50": 7.25}
    peer = {**both, "correct_answers": 3, "wrong_answers": 1, "refused_unanswerable": 0, "seconds_p50": 9.0}
    m = {"run": {"date": "d", "machine": "m", "golden": "g", "n_questions": 4, "wall_seconds": 60},
         "by_part": {"all": {"n": 4, "kinds": {}, "retrieval": {}}},
         "peer": {"pipeline": "plain", "sample": {"ids": list("abcd")},
                  "by_part": {"all": {"ours": both, "peer": peer}}}}
    t = render_table(m)
    assert "| this project | 2/3 / 1 / 1/1 / 7.2 s |" in t
    assert "| plain llama-index RAG | 3/3 / 1 / 0/1 / 9.0 s |" in t


def test_judge_failures_are_counted_per_metric_and_named(tmp_path, failing_nli_judge):
    """A judge that fails is reported (count per metric, the error, the question), never averaged away silently."""
    from eval.answers import ragas_scores
    from eval.report import render_markdown
    from ingest.embed import HashEmbedder

    records = [{"id": "q1", "kind": "answerable", "question": "What does the KV cache store?",
                "answer": "The KV cache stores the keys and values of past tokens.", "refused": False,
                "used_passages": ["The KV cache stores keys and values of past tokens."]}]
    res = ragas_scores(records, failing_nli_judge, HashEmbedder(), progress=False)
    assert res["judge_failures_by_metric"] == {"faithfulness": 1, "answer_relevancy": 0, "context_precision": 0}
    assert res["judge_failures"] == 1 and math.isnan(res["faithfulness"])
    assert res["judge_errors"][0].startswith("q1: ") and "judge endpoint said 500" in res["judge_errors"][0]
    assert res["context_precision"] == res["context_precision"]          # scored, not NaN
    m = {"run": {"date": "d", "machine": "m", "golden": "g", "n_questions": 1, "kinds": {"answerable": 1},
                 "settings_summary": "s"},
         "index": {"n_chunks": 1, "n_guides": 1}, "retrieval": {}, "latency_ms": {},
         "answers": {"ragas": res, "judge": "failing"}}
    md = render_markdown(m)
    assert "The judge failed 1 judgements" in md and "judge endpoint said 500" in md
    from eval.report import _md_to_html

    page = _md_to_html(md)
    assert "<strong>The judge failed 1 judgements</strong>" in page and "<code>q1: RuntimeError" in page



def test_report_html_renders_markdown_and_escapes_user_text():
    from eval.report import _md_to_html, render_markdown

    m = {"run": {"date": "d", "machine": "<script>alert(1)</script>", "golden": "g&<b>.jsonl", "n_questions": 1,
                 "kinds": {"answerable": 1}, "settings_summary": "s"},
         "index": {"n_chunks": 1, "n_guides": 1}, "retrieval": {"hybrid <img src=x>": {"hit@1": 0.5}}, "latency_ms": {}}
    page = _md_to_html(render_markdown(m))
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "<li>run: d on &lt;script&gt;alert(1)&lt;/script&gt;</li>" in page
    assert "<code>g&amp;&lt;b&gt;.jsonl</code>" in page
    assert "<h2>Retrieval (answerable + follow-up questions)</h2>" in page
    assert "<td>hybrid &lt;img src=x&gt;</td>" in page and "<td>0.500</td>" in page and "<th>hit@1</th>" in page

def test_schema_judge_survives_one_event_loop_per_answer():
    """ragas is driven by one asyncio.run per answer; the judge's connections must not belong to a dead loop."""
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pydantic import BaseModel

    from core.llm import OpenAICompatLLM
    from eval.judge import SchemaJudge

    requests = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"            # keep-alive, so a client would pool the connection

        def do_POST(self):
            requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": '{"verdict": 1}'}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class Verdict(BaseModel):
        verdict: int

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = OpenAICompatLLM(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="m", api_key=None,
                              context_window=4096, name="stub")
        judge = SchemaJudge(llm, name="stub")
        for _ in range(3):
            assert asyncio.run(judge.agenerate("Is it supported?", Verdict)).verdict == 1
        assert judge.calls == 3 and judge.invalid == 0
        # through the project's client, with the reply held to the pydantic model's schema
        assert len(requests) == 3 and requests[0]["model"] == "m" and requests[0]["temperature"] == 0.0
        fmt = requests[0]["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Verdict"
        assert fmt["json_schema"]["schema"] == Verdict.model_json_schema()      # nothing to bound in it
        assert requests[0]["messages"][-1] == {"role": "user", "content": "Is it supported?"}
    finally:
        server.shutdown()


def test_facts_in_the_prompt_are_read_from_what_the_model_would_read(tmp_path, guides_copy, fake_settings):
    """eval.selection: the selection at a budget, and the passages whole, checked against each answer fact."""
    from eval.golden import GoldenItem
    from eval.selection import dropped, readings, summary
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest
    from pipeline.qa import Pipeline

    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    items = [GoldenItem(id="q", kind="answerable", turns=["What does the KV cache store?"], evidence=["KV cache"],
                        answer_keywords=[], line=1, answer_facts=(("key",), ("zzz-not-in-any-guide",))),
             GoldenItem(id="k", kind="answerable", turns=["What does the KV cache store?"], evidence=["KV cache"],
                        answer_keywords=[], line=2, answer_facts=(("cache",),))]
    pipe = Pipeline(s, embedder=HashEmbedder())
    try:
        rd = readings(pipe, items, budget=5)
    finally:
        pipe.close()
    sel, whole = rd["selection"], rd["passages"]
    assert [r.missing for r in whole] == [["zzz-not-in-any-guide"], []]       # a fact no passage holds is missing
    assert "Question: What does the KV cache store?" in whole[0].text and whole[0].tokens > sel[0].tokens
    assert summary(whole)["complete"] == 1 and summary(whole)["questions"] == 2
    assert dropped(sel, whole) == []               # the one complete question keeps its fact (it is in the question)


def test_readme_table_says_how_often_an_incomplete_warning_is_right():
    from eval.readme import render_table

    a = {"correct_answers": 5, "verified_answers": 0, "verified_precision": float("nan"), "refused_unanswerable": 0,
         "false_refusals": 0, "facts_on_screen": 5, "incomplete_answers": 4, "incomplete_correct": 1}
    m = {"run": {"date": "d", "machine": "m", "golden": "g", "n_questions": 8, "wall_seconds": 60},
         "by_part": {"all": {"n": 8, "kinds": {"answerable": 8}, "retrieval": {}, "answers": a}}}
    assert '| shown "may be incomplete": of them not correct | 3/4 (0.750) |' in render_table(m)
