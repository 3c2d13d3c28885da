"""`guides practice`: list, grade (the JSON contract), stats and the interactive drill."""

from __future__ import annotations

import io
import json

import pytest


@pytest.fixture
def practice_env(guides_copy, fake_settings, monkeypatch):
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest

    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    for k, v in {"GUIDES_GUIDES_DIR": str(guides_copy), "GUIDES_DATA_DIR": str(s.data_dir),
                 "GUIDES_EMBED_MODEL": "fake:hash", "GUIDES_LLM": "fake", "GUIDES_RERANKER": "off"}.items():
        monkeypatch.setenv(k, v)
    return s


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_list_then_grade_by_id(practice_env, capsys, monkeypatch):
    from guides_qa.cli import main

    assert main(["practice", "list", "--json"]) == 0
    rows = _lines(capsys)
    assert len(rows) >= 140 and set(rows[0]) == {"id", "question", "guide", "section", "lines"}
    lora = next(r for r in rows if r["question"].startswith("What is LoRA (Low-Rank Adaptation)"))
    assert lora["guide"] == "transformers-llm-interview-questions.md" and lora["lines"][0] < lora["lines"][1]
    assert main(["practice", "grade", lora["id"], "--json", "--answer",
                 "LoRA freezes the pre-trained weights and injects trainable rank decomposition matrices. "
                 "It reduces trainable parameters by 100x."]) == 0
    (g,) = _lines(capsys)
    assert set(g) >= {"id", "score", "covered", "missed", "contradicted", "reference"}
    assert g["id"] == lora["id"] and 0 <= g["score"] < 1
    assert g["contradicted"][0]["reason"] == "the guide says 10,000x, not 100x"
    assert all(set(p) >= {"text", "lines"} for p in g["covered"] + g["missed"])
    monkeypatch.setattr("sys.stdin", io.StringIO("- freezes the pre-trained weights\n- injects rank decomposition matrices\n"))
    assert main(["practice", "grade", lora["id"], "--answer", "-", "--json"]) == 0
    assert _lines(capsys)[0]["covered"]
    assert main(["practice", "stats", "--json"]) == 0
    assert _lines(capsys)[0]["seen"] == 1                         # two attempts at one question


def test_an_unknown_id_says_how_to_list_them(practice_env, capsys):
    from guides_qa.cli import main

    assert main(["practice", "grade", "no-such-id", "--answer", "x"]) == 2
    assert "guides practice list" in capsys.readouterr().err


def test_guide_filter_and_no_match(practice_env, capsys):
    from guides_qa.cli import main

    assert main(["practice", "--guide", "webpage", "list", "--json"]) == 0
    assert {r["guide"] for r in _lines(capsys)} == {"llm-interview-questions-webpage.txt"}
    assert main(["practice", "--guide", "nope", "list"]) == 2
    assert "No practice question matches" in capsys.readouterr().err


def test_the_drill_asks_grades_and_saves_progress(practice_env, capsys, monkeypatch):
    from guides_qa.cli import main

    answers = iter(["A large language model is trained on vast amounts of text data.", "", "I don't know", ""])

    def fake_input(prompt=""):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    assert main(["practice", "--guide", "100-llm"]) == 0
    out = capsys.readouterr().out
    assert "What is a Large Language Model (LLM)?" in out and "Score:" in out
    assert "2 answered this session; your progress is saved." in out
    assert main(["practice", "stats", "--json"]) == 0
    assert _lines(capsys)[0]["seen"] == 2


def test_no_index_yet_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from guides_qa.cli import main

    monkeypatch.setenv("GUIDES_DATA_DIR", str(tmp_path / "empty"))
    assert main(["practice", "list"]) == 2
    assert "guides ingest" in capsys.readouterr().err
