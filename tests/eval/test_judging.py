"""The judged part of an eval: the fixed stratified sample, the judgement cache, the judge's bounds and slots,
the plan line, the README table and the per-question changes. Fast: the deterministic fake judge."""

from __future__ import annotations

import json
import threading

import pytest

from eval.answers import ragas_scores
from eval.judge import FakeJudge, bound_schema, slot_plan
from eval.judge_cache import JudgeCache, JudgeCacheError, judgement_key
from eval.sample import draw_sample
from ingest.embed import HashEmbedder


class CountingJudge(FakeJudge):
    """The fake judge, counting the calls per prompt kind (thread-safe: judgements run concurrently)."""

    def __init__(self):
        super().__init__()
        self.kinds: dict[str, int] = {}
        self._lock = threading.Lock()

    def generate(self, prompt, response_model):
        with self._lock:
            self.kinds[response_model.__name__] = self.kinds.get(response_model.__name__, 0) + 1
        return super().generate(prompt, response_model)


def rec(qid: str, part: str = "test", kind: str = "answerable", answer: str | None = None, refused: bool = False) -> dict:
    return {"id": qid, "part": part, "kind": kind, "question": f"What does the KV cache store ({qid})?",
            "answer": answer or "The KV cache stores the keys and values of past tokens [1].", "refused": refused,
            "used_passages": ["The KV cache stores keys and values of past tokens.", "Attention reads them."]}


def records(n_per: int = 6) -> list[dict]:
    out = []
    for part in ("tune", "test"):
        for kind, k in (("answerable", n_per * 3), ("followup", n_per), ("unanswerable", 2)):
            for i in range(k):
                out.append(rec(f"{part[:2]}-{kind[:2]}-{i}", part, kind, refused=(kind == "unanswerable" and i == 0)))
    return out


def test_sample_is_fixed_stratified_and_covers_every_part_and_kind():
    rs = records()
    chosen, how = draw_sample(rs, 12)
    again, _ = draw_sample(list(reversed(rs)), 12)
    assert [r["id"] for r in chosen] == [r["id"] for r in again]          # the input order does not matter
    assert len(chosen) == 12 and how["ids"] == [r["id"] for r in chosen]
    strata = {(r["part"], r["kind"]) for r in chosen}
    assert strata == {(p, k) for p in ("tune", "test") for k in ("answerable", "followup", "unanswerable")}
    assert not any(r["refused"] for r in chosen)                           # a refusal has nothing to judge
    assert sum(v["judged"] for v in how["strata"].values()) == 12
    assert how["strata"]["test/answerable"]["judged"] > how["strata"]["test/followup"]["judged"]   # proportional
    bigger, _ = draw_sample(rs, 20)                                        # a larger sample contains a smaller one
    assert {r["id"] for r in chosen} <= {r["id"] for r in bigger}
    everything, how_all = draw_sample(rs, None)
    assert len(everything) == how_all["candidates"] == sum(not r["refused"] for r in rs)


def test_a_changed_answer_is_judged_again_an_unchanged_one_is_not(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    rs = [rec("a"), rec("b")]
    j1 = CountingJudge()
    first = ragas_scores(rs, j1, HashEmbedder(), cache=cache, progress=False)
    assert first["judged"] == 2 and first["from_cache"] == 0 and j1.calls > 0
    j2 = CountingJudge()
    rs2 = [rec("a"), rec("b", answer="The KV cache keeps past keys and values [1].")]
    second = ragas_scores(rs2, j2, HashEmbedder(), cache=cache, progress=False)
    assert second["from_cache"] == 3                                       # all three metrics of "a"
    assert j2.calls > 0 and j2.calls == j1.calls // 2                      # only "b" went to the judge
    j3 = CountingJudge()
    third = ragas_scores(rs2, j3, HashEmbedder(), cache=cache, progress=False)
    assert third["from_cache"] == 6 and j3.calls == 0
    assert third["faithfulness"] == second["faithfulness"]
    assert rs2[1]["ragas"]["faithfulness"] == 1.0                          # per-answer scores kept on the record


def test_key_covers_judge_metric_question_answer_and_contexts():
    base = ("judge-a", "faithfulness", "q", "answer", ["ctx"])
    k = judgement_key(*base)
    for i, other in enumerate(("judge-b", "answer_relevancy", "q2", "answer2", ["ctx", "more"])):
        changed = list(base)
        changed[i] = other
        assert judgement_key(*changed) != k, f"field {i} is not in the key"
    assert judgement_key(*base) == k


def test_two_runs_share_one_cache(tmp_path):
    """Two eval runs at once on the same file: both finish, nothing is lost, a third run judges nothing."""
    path = tmp_path / "shared.sqlite"
    rs = [rec(f"q{i}") for i in range(8)]
    results, errors = [], []

    def run(records_):
        try:
            results.append(ragas_scores(records_, CountingJudge(), HashEmbedder(), cache=JudgeCache(path),
                                        progress=False, concurrency=3))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run, args=([dict(r) for r in rs],)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert len(JudgeCache(path)) == 3 * len({r["answer"] + r["question"] for r in rs})
    j = CountingJudge()
    again = ragas_scores([dict(r) for r in rs], j, HashEmbedder(), cache=JudgeCache(path), progress=False)
    assert j.calls == 0 and again["from_cache"] == 24


def test_a_failed_judgement_is_not_cached(tmp_path, failing_nli_judge):
    cache = JudgeCache(tmp_path / "c.sqlite")
    res = ragas_scores([rec("a")], failing_nli_judge, HashEmbedder(), cache=cache, progress=False)
    assert res["judge_failures"] == 1 and len(cache) == 2
    again = ragas_scores([rec("a")], CountingJudge(), HashEmbedder(), cache=cache, progress=False)
    assert again["from_cache"] == 2 and again["faithfulness"] == 1.0       # tried again, and now stored


def test_a_damaged_cache_file_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "judge_cache.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JudgeCacheError, match="judge_cache.sqlite .*Delete the file.*--no-judge-cache"):
        JudgeCache(bad).get("k")


def test_judge_output_is_bounded_and_each_prompt_kind_keeps_its_slots():
    from ragas.metrics.collections.context_precision.util import ContextPrecisionOutput
    from ragas.metrics.collections.faithfulness.util import NLIStatementOutput

    cp = bound_schema(ContextPrecisionOutput.model_json_schema(), reason_chars=80)
    assert cp["properties"]["reason"]["maxLength"] == 80
    nli = bound_schema(NLIStatementOutput.model_json_schema(), reason_chars=50)
    assert nli["properties"]["statements"]["maxItems"] == 12
    item = next(iter(nli["$defs"].values()))["properties"]
    assert item["reason"]["maxLength"] == 50 and item["statement"]["maxLength"] == 120
    assert ContextPrecisionOutput.model_json_schema()["properties"]["reason"].get("maxLength") is None  # a copy

    four = slot_plan(4)
    assert sorted(s for v in four.values() for s in v) == [0, 1, 2, 3]     # one kind per slot
    six = slot_plan(6)
    assert len(six["ContextPrecisionOutput"]) == 2 and len(six["NLIStatementOutput"]) == 2
    two = slot_plan(2)
    assert all(len(v) == 1 and v[0] in (0, 1) for v in two.values())


def test_plan_line_says_what_runs_and_how_long(fake_settings, guides_copy):
    from pathlib import Path

    from eval.golden import load_golden
    from eval.runner import plan_line

    s = fake_settings(guides_copy)
    items = load_golden(Path(__file__).resolve().parents[2] / "eval" / "golden.jsonl")
    line = plan_line(s, items, retrieve_only=False, judge=FakeJudge(), sample=24, workers=4, speed=None)
    assert f"{len(items)} questions" in line and "4 at once" in line and "fixed sample of 24" in line
    assert "estimate: none yet" in line
    speed = {"retrieval_s": 0.1, "answer_s": 4.0, "judge_s": 30.0}
    line = plan_line(s, items, retrieve_only=False, judge=FakeJudge(), sample=24, workers=4, speed=speed)
    expected = round((len(items) * 4.1 + 24 * 30) / 60)
    assert f"at most ~{expected} min" in line
    assert "no ragas judge" in plan_line(s, items, retrieve_only=False, judge=None, sample=24, workers=1, speed=speed)


def test_judge_sample_argument_is_checked():
    from eval.runner import parse_judge_sample

    assert parse_judge_sample("all") is None and parse_judge_sample("30") == 30 and parse_judge_sample(5) == 5
    for bad in ("0", "-3", "some", ""):
        with pytest.raises(ValueError, match="--judge-sample .*positive number of questions or 'all'"):
            parse_judge_sample(bad)
    with pytest.raises(ValueError, match="--peer-sample 'x'"):
        parse_judge_sample("x", flag="--peer-sample")


def test_readme_table_is_written_from_metrics_between_the_markers(tmp_path):
    from eval.readme import BEGIN, END, MAX_LINES, ReadmeError, update_readme

    m = json.loads(json.dumps(SAMPLE_METRICS))
    mj = tmp_path / "metrics.json"
    mj.write_text(json.dumps(m))
    readme = tmp_path / "README.md"
    readme.write_text(f"# App\n\nintro\n\n## Measured\n\n{BEGIN}\nold table\n{END}\n\n## After\nkept\n")
    msg = update_readme(mj, readme)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# App\n\nintro") and text.endswith("## After\nkept\n")
    body = text.split(BEGIN)[1].split(END)[0]
    assert len(body.strip().splitlines()) <= MAX_LINES and "Rewrote" in msg
    assert "| correct answers" in body and "37/58 (0.638)" in body and "2026-12-06 08:00 UTC" in body
    assert "0.81 / 0.62 / 0.90 (24)" in body                              # ragas, with the judged count
    assert "from the cache" in body
    readme.write_text("# no markers\n")
    with pytest.raises(ReadmeError, match="no measured section"):
        update_readme(mj, readme)


def test_compare_lists_questions_whose_state_or_correctness_changed(tmp_path):
    from eval.report import changed_questions

    old = tmp_path / "old" / "questions.jsonl"
    new = tmp_path / "new" / "questions.jsonl"
    old.parent.mkdir()
    new.parent.mkdir()
    rows = [{"id": "a", "part": "tune", "status": "verified", "correct": True},
            {"id": "b", "part": "test", "status": "incomplete", "correct": False},
            {"id": "c", "part": "test", "status": "verified", "correct": True}]
    old.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[1] = {**rows[1], "status": "verified", "correct": True}
    rows[2] = {**rows[2], "correct": False}
    new.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = changed_questions(old, new)
    assert out.startswith("2 question(s) changed")
    assert "b" in out and "incomplete, not correct" in out and "-> verified, correct" in out
    assert "\n  a " not in out
    assert "No question changed" in changed_questions(new, new)
    assert "per-question changes not listed" in changed_questions(tmp_path / "none" / "questions.jsonl", new)


SAMPLE_METRICS = {
    "run": {"date": "2026-12-06 08:00 UTC", "machine": "x86_64, 2 cores, Python 3.11.7", "golden": "eval/golden.jsonl",
            "n_questions": 135, "kinds": {"answerable": 107, "followup": 16, "unanswerable": 12},
            "default_pipeline": "hybrid", "split": {"part": "all"}, "retrieve_only": False, "judge_sample": 24,
            "wall_seconds": 1100.0, "eval_parallel": 4, "stage_seconds": {"judging": 400.0}},
    "retrieval": {"hybrid": {"hit@1": 0.69}},
    "by_part": {
        p: {"n": n, "kinds": {"answerable": a, "followup": f, "unanswerable": u},
            "retrieval": {"hybrid": {"hit@1": 0.6, "hit@5": 0.9, "mrr@10": 0.7}},
            "answers": {"correct_answers": c, "verified_answers": 16, "verified_precision": 0.875,
                        "refused_unanswerable": 4, "false_refusals": 0, "facts_on_screen": 42,
                        "ragas": {"judged": 24, "faithfulness": 0.81, "answer_relevancy": 0.62,
                                  "context_precision": 0.9}}}
        for p, n, a, f, u, c in (("tune", 62, 50, 8, 4, 37), ("test", 73, 57, 8, 8, 37), ("all", 135, 107, 16, 12, 74))},
    "answers": {"ragas": {"judge": "bundled", "judged": 24, "judgements": 72, "from_cache": 10, "judge_failures": 0}},
    "latency_ms": {"first_token": {"p50": 3600.0, "p95": 4100.0}, "total": {"p50": 5000.0, "p95": 6800.0}},
}


@pytest.mark.slow
def test_bundled_judge_scores_two_answers_and_a_rerun_reads_both_from_the_cache(tmp_path):
    """The real 1.5B judge on a 4-slot server, bounded output, pinned prompt kinds; the rerun makes no call."""
    from pathlib import Path
    from types import SimpleNamespace

    from core.llm import load_llm
    from core.settings import Settings
    from eval.judge import load_judge

    repo = Path(__file__).resolve().parents[2]
    s = Settings(llm="bundled", judge="bundled", data_dir=repo / "data", llm_parallel=4)
    llm = load_llm(s)
    try:
        judge = load_judge(s, SimpleNamespace(llm=llm))
        rs = [{"id": "lora", "part": "test", "kind": "answerable", "question": "What does LoRA train?",
               "answer": "LoRA freezes the pretrained weights and trains two small low-rank matrices [1].",
               "refused": False, "used_passages": [
                   "LoRA freezes the pretrained weights and injects trainable low-rank matrices A and B into each "
                   "layer, so only a small share of the parameters is trained."]},
              {"id": "kv", "part": "tune", "kind": "answerable", "question": "What does the KV cache store?",
               "answer": "It stores the keys and values of earlier tokens, so they are not recomputed [1].",
               "refused": False, "used_passages": [
                   "The KV cache stores the key and value vectors of previous tokens so that each new token only "
                   "computes its own; memory grows with sequence length."]}]
        cache = JudgeCache(tmp_path / "judge_cache.sqlite")
        first = ragas_scores([dict(r) for r in rs], judge, HashEmbedder(), cache=cache, progress=False)
        assert first["judged"] == 2 and first["from_cache"] == 0
        assert first["judge_failures"] == 0, first["judge_errors"]
        assert 0.0 <= first["faithfulness"] <= 1.0 and 0.0 <= first["context_precision"] <= 1.0
        calls = judge.calls
        second = ragas_scores([dict(r) for r in rs], judge, HashEmbedder(), cache=cache, progress=False)
        assert second["from_cache"] == 6 and judge.calls == calls
        assert second["faithfulness"] == first["faithfulness"]
    finally:
        llm.close()
