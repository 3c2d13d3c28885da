"""The `guides` command end to end, with the hash embedder (set through the environment)."""

import json
import re

import pytest

from guides_qa.cli import main


@pytest.fixture
def env(tmp_path, monkeypatch, guides_copy):
    monkeypatch.setenv("GUIDES_EMBED_MODEL", "fake:hash")
    monkeypatch.setenv("GUIDES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GUIDES_GUIDES_DIR", str(guides_copy))
    monkeypatch.setenv("GUIDES_RERANKER", "off")
    monkeypatch.setenv("GUIDES_LLM", "fake")
    return tmp_path


def test_ingest_ask_json_and_batch(env, capsys):
    assert main(["ingest", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Files: 5 read, 0 skipped" in out and "added" in out and "Seconds:" in out

    assert main(["ask", "what is the kv cache", "--retrieve-only", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["question"] == "what is the kv cache" and len(obj["contexts"]) == 10
    c = obj["contexts"][0]
    assert c["rank"] == 1 and len(c["lines"]) == 2 and c["text"]

    batch = env / "b.jsonl"
    batch.write_text(
        json.dumps({"id": "q1", "turns": ["what is LoRA?"]}) + "\n"
        + json.dumps({"id": "q2", "turns": ["what is QLoRA?", "how much memory does it save?"]}) + "\n"
        + json.dumps({"id": "q3", "turns": ["   "]}) + "\n"
    )
    assert main(["ask", "--batch", str(batch), "--json", "--retrieve-only"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["id"] for l in lines] == ["q1", "q2", "q3"]
    assert "qlora" in lines[1]["search_query"].lower()        # the follow-up was made standalone
    assert "line 3" in lines[2]["error"] and "empty" in lines[2]["error"]


def test_errors_are_one_clear_line(env, capsys):
    assert main(["ask", "what?", "--retrieve-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No index found") and "guides ingest" in err
    bad = env / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["ask", "--batch", str(bad), "--retrieve-only"]) == 2
    assert "line 1: not valid JSON" in capsys.readouterr().err


def test_bad_setting_names_the_variable(env, monkeypatch, capsys):
    monkeypatch.setenv("GUIDES_TOP_K", "0")
    assert main(["ask", "x", "--retrieve-only"]) == 2
    assert "GUIDES_TOP_K" in capsys.readouterr().err


def _ingest_and_ask(capsys, question: str) -> str:
    """`guides ingest`, then `guides ask question` in text mode; returns what the ask printed."""
    assert main(["ingest", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["ask", question]) == 0
    return capsys.readouterr().out


def test_ask_streams_the_answer_then_numbered_sources(env, capsys):
    out = _ingest_and_ask(capsys, "Why scale attention by the square root of d_k?")
    answer, _, rest = out.partition("\nSources:\n")
    assert answer.strip() and rest, out                           # the answer is printed before the sources
    sources = [l for l in rest.splitlines() if l.startswith("[")]
    assert sources and sources[0].startswith("[1] ") and "lines " in sources[0]
    assert any("✓ verified" in l for l in sources), out          # the fake model echoes passage [1]
    assert "\nAnswer " in answer                                # the answer's own state, under it
    assert "timings (ms): " in rest and "first_token" in rest


def test_an_incomplete_answer_is_said_and_the_evidence_it_leaves_out_is_printed(env, capsys, monkeypatch):
    """The fake model echoes passage [1]'s first sentence, which states little of the best evidence; under the
    coverage rule that is 'incomplete' (the question rule's naming is tested in the answerer and the app). The
    evidence it leaves out is in the one evidence block, marked so."""
    monkeypatch.setenv("GUIDES_ANSWER_INCOMPLETE", "coverage")
    out = _ingest_and_ask(capsys, "Why does asking a model to reason step by step actually improve its answers?")
    assert "\nAnswer may be incomplete: every sentence is verified" in out, out
    block = out.split("\nFrom the guides:\n", 1)[1].split("\nSources:", 1)[0]
    assert "also say" not in out
    left = block[block.index("not in the answer"):]
    head, quote = block[block.rindex("\n[", 0, block.index("not in the answer")) + 1:].splitlines()[:2]
    assert head.startswith("[") and re.search(r", (line \d+|lines (\d+)–(?!\2\b)\d+)\)$", head), head
    assert quote.startswith("  > ") and len(quote) > 20 and "**" not in quote


def test_a_streamed_draft_that_fails_the_checks_is_withdrawn_visibly(env, capsys, monkeypatch):
    """The fake model states something no passage says: the refusal must follow the draft."""
    monkeypatch.setenv("GUIDES_LLM", "fake:offtopic")
    out = _ingest_and_ask(capsys, "What does the KV cache store?")
    draft, _, after = out.partition("The draft above is withdrawn (")
    assert draft.strip() and after, out
    assert after.startswith("no sentence of the model's answer is supported") and "The guides don't seem to cover this" in after
