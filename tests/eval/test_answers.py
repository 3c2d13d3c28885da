"""Correctness, verified precision, per-part figures and wins/losses, their report and --compare."""

import json
import math
from pathlib import Path

import pytest

from eval.answers import deterministic_summary, facts_on_screen, judge_answer, shown_quotes, unsupported_numbers
from eval.golden import GoldenItem, load_golden, split_of
from eval.report import compare, render_markdown
from eval.runner import by_part, wins_losses

MIXTRAL = GoldenItem("f02", "followup", ["How does MoE route?", "How many are active in Mixtral?"], ["12.9B"], [], 1,
                     (("12.9B", "12.9 billion", "12.9"),))
PASSAGE = "Mixtral 8×7B has 46.7B total but only activates 12.9B per token (2 of 8 experts)."
REPO = Path(__file__).resolve().parents[2]
OK_CITE = [{"n": 1, "verified": True}]


def test_a_correct_answer():
    r = judge_answer(MIXTRAL, "Mixtral activates about 12.9B of its 46.7B parameters per token [1].", False,
                     [PASSAGE], OK_CITE)
    assert r == {"correct": True, "missing_facts": [], "unsupported_numbers": [], "fully_verified": True}


def test_missing_fact_is_wrong_even_when_verified():
    """Issue 9's example: '8 active parameters' is verified by the passage's numbers but misses 12.9B."""
    r = judge_answer(MIXTRAL, "46.7B total parameters and 8 active parameters [1].", False, [PASSAGE], OK_CITE)
    assert not r["correct"] and r["missing_facts"] == ["12.9B"] and r["fully_verified"]


def test_a_number_no_passage_states_is_a_contradiction():
    r = judge_answer(MIXTRAL, "It activates 12.9B of 47B parameters [1].", False, [PASSAGE],
                     [{"n": 1, "verified": False}])
    assert not r["correct"] and r["missing_facts"] == [] and r["unsupported_numbers"] == ["47b"]
    assert not r["fully_verified"]


def test_markers_and_list_enumerators_are_not_numbers_the_answer_states():
    text = "Two points:\n1. It activates 12.9B [1][3].\n2) Routing picks 2 of 8 [2].\n  - 3. 46.7B total"
    assert unsupported_numbers(text, [PASSAGE]) == []
    assert unsupported_numbers("Step 5 uses 12.9B.", [PASSAGE]) == ["5"]      # not a list enumerator
    assert unsupported_numbers("12.9B", []) == ["12.9b"]


def test_refusals_and_unanswerable_questions():
    refused = judge_answer(MIXTRAL, "The guides don't seem to cover 12.9B.", True, [PASSAGE], [])
    assert not refused["correct"] and not refused["fully_verified"] and refused["unsupported_numbers"] == []
    un = GoldenItem("u", "unanswerable", ["capital of Mongolia?"], [], [], 2)
    assert judge_answer(un, "I can't answer that from the guides.", True, [], [])["correct"]
    wrong = judge_answer(un, "Ulaanbaatar [1].", False, [PASSAGE], OK_CITE)
    assert not wrong["correct"] and wrong["fully_verified"]


def _rec(qid, kind, correct, refused=False, verified=False, status=None):
    return {"id": qid, "kind": kind, "answer": "x", "refused": refused, "correct": correct, "fully_verified": verified,
            "status": status or ("verified" if verified else "unverified"),
            "citations": [], "keyword_recall": 0.0, "all_keywords": False, "missing_facts": [],
            "unsupported_numbers": []}


def test_summary_counts_correctness_verified_precision_and_refusals():
    recs = [_rec("a1", "answerable", True, verified=True),
            _rec("a2", "answerable", False, verified=True),      # verified but wrong
            _rec("a3", "followup", True),
            _rec("a4", "answerable", False, refused=True),       # false refusal
            _rec("u1", "unanswerable", True, refused=True),
            _rec("u2", "unanswerable", False, verified=True)]    # answered an unanswerable question, "verified"
    s = deterministic_summary(recs)
    assert s["correctness"] == pytest.approx(2 / 4) and s["correct_answers"] == 2
    assert s["verified_answers"] == 3 and s["verified_precision"] == pytest.approx(1 / 3)
    assert s["refused_unanswerable"] == 1 and s["refusal_accuracy_unanswerable"] == 0.5
    assert s["false_refusals"] == 1 and s["false_refusal_rate_answerable"] == 0.25
    assert math.isnan(deterministic_summary([_rec("a", "answerable", True)])["verified_precision"])


def test_summary_counts_incomplete_answers_apart_from_verified_ones():
    recs = [_rec("a1", "answerable", True, verified=True),
            _rec("a2", "answerable", False, status="incomplete"),
            _rec("a3", "answerable", True, status="incomplete")]
    s = deterministic_summary(recs)
    assert s["verified_answers"] == 1 and s["verified_precision"] == 1.0
    assert s["incomplete_answers"] == 2 and s["incomplete_correct"] == 1


def test_facts_on_screen_counts_the_quotes_shown_under_the_answer():
    """A wrong answer whose missing fact is in the evidence shown under it has its facts on screen; a refusal
    never does, and an unanswerable question has no facts."""
    quote = "Mixtral activates 12.9B per token."
    assert not judge_answer(MIXTRAL, "Mixtral routes to 2 experts [1].", False, [PASSAGE], OK_CITE)["correct"]
    assert facts_on_screen(MIXTRAL, "Mixtral routes to 2 experts [1].", False, [quote])
    assert not facts_on_screen(MIXTRAL, "Mixtral routes to 2 experts [1].", False, ["It routes to 2 of 8."])
    assert not facts_on_screen(MIXTRAL, "I cannot find this.", True, [quote])
    assert facts_on_screen(GoldenItem("u", "unanswerable", ["q"], [], [], 2), "x", True, [quote]) is None


def test_shown_quotes_are_the_evidence_and_left_out_rows_not_the_passing_first_quote():
    class A:
        evidence = [{"quote": "ev one"}]
        left_out = [{"quote": "also one"}, {"quote": "also two"}]
        first_quote = object()
    assert shown_quotes(A()) == ["ev one", "also one", "also two"]


def test_summary_counts_facts_on_screen_over_answerable_questions():
    recs = [{**_rec("a1", "answerable", False), "on_screen": True},
            {**_rec("a2", "answerable", True), "on_screen": True},
            {**_rec("a3", "answerable", False), "on_screen": False},
            {**_rec("u1", "unanswerable", True, refused=True), "on_screen": None}]
    s = deterministic_summary(recs)
    assert s["facts_on_screen"] == 2 and s["facts_on_screen_share"] == pytest.approx(2 / 3)


def test_wins_and_losses_against_hybrid():
    qrels = {"q1": {"d1"}, "q2": {"d2"}, "q3": {"d3"}, "q4": {"d4"}}
    hybrid = {"q1": ["d9", "d1"], "q2": ["d2"], "q3": ["d9"], "q4": ["d4"]}
    other = {"q1": ["d1"], "q2": ["d9", "d2"], "q3": ["d3"], "q4": ["d4"]}
    assert wins_losses(other, hybrid, qrels) == {"won": 2, "lost": 1, "tied": 1}


def test_by_part_reports_each_part_and_overall():
    ids = [f"q{i}" for i in range(12)]
    items = [GoldenItem(i, "answerable", ["?"], ["e"], [], 1, (("x",),)) for i in ids]
    qrels = {i: {f"d{i}"} for i in ids}
    runs = {"hybrid": {i: [f"d{i}"] for i in ids}, "bm25": {i: ["zz", f"d{i}"] for i in ids}}
    recs = {i: _rec(i, "answerable", True) for i in ids}
    out = by_part(items, runs, qrels, recs)
    n_test = sum(split_of(i) == "test" for i in ids)
    assert 0 < n_test < 12
    assert out["test"]["n"] == n_test and out["tune"]["n"] == 12 - n_test and out["all"]["n"] == 12
    assert out["all"]["retrieval"]["hybrid"]["hit@1"] == 1.0 and out["all"]["retrieval"]["bm25"]["hit@1"] == 0.0
    assert out["test"]["retrieval"]["bm25"]["vs_hybrid"] == {"won": 0, "lost": n_test, "tied": 0}
    assert "vs_hybrid" not in out["test"]["retrieval"]["hybrid"]
    assert out["tune"]["answers"]["correctness"] == 1.0
    assert "answers" not in by_part(items, runs, qrels, None)["all"]


def _metrics(correctness, hit1):
    part = {"n": 2, "kinds": {"answerable": 2},
            "retrieval": {"hybrid": {"n": 2, "hit@1": hit1},
                          "bm25": {"n": 2, "hit@1": 0.5, "vs_hybrid": {"won": 1, "lost": 0, "tied": 1}}},
            "answers": {"correctness": correctness, "verified_precision": 1.0, "verified_answers": 1,
                        "refused_unanswerable": 0, "false_refusals": 0}}
    return {"run": {"date": "d", "machine": "m", "golden": "g", "n_questions": 2, "kinds": {"answerable": 2},
                    "settings_summary": "s", "split": {"part": "all", "seed": "S", "test_share": 0.5}},
            "index": {"n_chunks": 1, "n_guides": 1}, "retrieval": {"hybrid": {"hit@1": hit1}},
            "by_part": {"tune": part, "test": part, "all": part},
            "answers": {"correctness": correctness, "verified_precision": 1.0, "judge": "none"}, "latency_ms": {}}


def test_report_shows_parts_correctness_and_per_question_table():
    qs = [{"id": "f02", "part": "test", "kind": "followup", "correct": False, "refused": False,
           "missing_facts": ["12.9B"], "unsupported_numbers": ["47"], "fully_verified": True,
           "status": "verified", "on_screen": True}]
    md = render_markdown(_metrics(0.5, 0.75), qs)
    assert "## Tune / test split" in md and "seed `S`" in md
    assert "| tune (answerable 2) | hybrid | 2 | 0.750 |" in md
    assert "| test | bm25 | 2 | 0.500 | – | – | – | 1 | 0 |" in md
    assert "### Correctness by part" in md and "| test | 2 | 0.500 |" in md
    assert "| f02 | test | followup | no | no | 12.9B | 47 | yes | verified | yes |" in md
    assert "| status | on_screen |" in md and "Facts on screen:" in md


def test_compare_shows_change_in_correctness_and_per_part_figures():
    out = compare(_metrics(0.5, 0.75), _metrics(0.75, 0.5))
    assert "answers.correctness" in out and "+0.250" in out
    assert "by_part.test.answers.correctness" in out and "by_part.test.retrieval.hybrid.hit@1" in out
    assert "by_part.tune.retrieval.bm25.vs_hybrid.won" in out
    assert "kinds" not in out


@pytest.mark.usefixtures("eval_cli_env")
def test_cli_split_runs_one_part(tmp_path):
    """`guides eval --retrieve-only --split test`: only test-part questions, per-part figures for that part."""
    from guides_qa.cli import main

    out = tmp_path / "run"
    assert main(["eval", "--retrieve-only", "--split", "test", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    test_ids = {i.id for i in load_golden(REPO / "eval" / "golden.jsonl") if i.part == "test"}
    qs = [json.loads(x) for x in (out / "questions.jsonl").read_text().splitlines()]
    assert {q["id"] for q in qs} == test_ids and {q["part"] for q in qs} == {"test"}
    assert m["run"]["split"]["part"] == "test" and set(m["by_part"]) == {"test", "all"}
    assert set(m["by_part"]["test"]["retrieval"]) == {"bm25", "dense", "hybrid"}
    assert set(m["by_part"]["test"]["retrieval"]["bm25"]["vs_hybrid"]) == {"won", "lost", "tied"}
    assert "## Tune / test split" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        main(["eval", "--retrieve-only", "--split", "dev", "--out", str(out), "--quiet"])


def test_judge_off_skips_the_llm_metrics_and_unknown_judges_are_named(tmp_path):
    import pytest

    from eval.judge import JudgeError, load_judge
    from core.settings import Settings

    assert load_judge(Settings(judge="off", data_dir=tmp_path)) is None
    with pytest.raises(JudgeError, match="'off'"):
        load_judge(Settings(judge="nope", data_dir=tmp_path))


def test_judges_use_the_projects_llm_client(tmp_path, monkeypatch):
    """Judging goes through core.llm like answering: 'bundled' reuses the answering model, nothing starts here."""
    from types import SimpleNamespace

    import pytest

    from core.llm import FakeLLM, LlamaServerLLM, OpenAICompatLLM, load_llm
    from core.settings import Settings
    from eval.judge import JudgeError, SchemaJudge, load_judge

    answering = load_llm(Settings(llm="bundled", data_dir=tmp_path))
    judge = load_judge(Settings(judge="bundled", llm="bundled", data_dir=tmp_path), SimpleNamespace(llm=answering))
    assert isinstance(judge, SchemaJudge) and judge.llm is answering and answering._server is None
    other = load_judge(Settings(judge="bundled", llm="fake", data_dir=tmp_path), SimpleNamespace(llm=FakeLLM()))
    assert isinstance(other.llm, LlamaServerLLM) and other.llm.name.startswith("bundled:")      # its own server
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    remote = load_judge(Settings(judge="openai", judge_base_url="http://127.0.0.1:9/v1", judge_model="jm",
                                 judge_api_key_env="JUDGE_KEY", data_dir=tmp_path))
    assert type(remote.llm) is OpenAICompatLLM and remote.llm.model == "jm"
    assert remote.llm.base_url == "http://127.0.0.1:9/v1" and remote.llm._hint == "GUIDES_JUDGE_BASE_URL"
    with pytest.raises(JudgeError, match="GUIDES_JUDGE_MODEL"):
        load_judge(Settings(judge="openai", judge_base_url="http://127.0.0.1:9/v1", data_dir=tmp_path))
    with pytest.raises(JudgeError, match="JSON schema.*GUIDES_JUDGE"):
        SchemaJudge(FakeLLM(), name="x")
