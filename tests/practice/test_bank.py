"""The question bank: extracted from the real guides, published with the index, ids stable."""

from __future__ import annotations

import json

from ingest.bank import BANK_FILE, bank_from_folder, entry_id, key_points


def test_the_real_guides_give_their_interview_questions(guides_copy):
    bank = bank_from_folder(guides_copy)
    by_guide = {}
    for e in bank:
        by_guide[e.guide] = by_guide.get(e.guide, 0) + 1
    assert by_guide["100-llm-interview-questions.md"] >= 90          # "### Q1: ...?" headings
    assert by_guide["transformers-llm-interview-questions.md"] >= 40  # "**Q1: ...?**" + "**Expected Answer:**"
    assert by_guide["llm-interview-questions-webpage.txt"] >= 10      # '"...?" → answer' quick-fire lines
    assert len({e.id for e in bank}) == len(bank) and all(e.points for e in bank)
    lora = next(e for e in bank if e.question.startswith("What is LoRA (Low-Rank Adaptation)"))
    assert lora.guide == "transformers-llm-interview-questions.md" and "Section 3" in lora.section
    assert [p.text.split(":")[0] for p in lora.points] == ["Problem", "LoRA Solution", "Benefit"]
    lines = (guides_copy / lora.guide).read_text(encoding="utf-8").split("\n")
    assert "Q15" in lines[lora.question_lines[0] - 1]                 # the guide's own line numbers
    assert "10,000x" in lines[lora.answer_lines[1] - 1] and "Expected Answer" not in lora.reference.split("\n")[0]


def test_key_points_items_rows_sentences_and_code():
    lines = ["**Answer:**", "- **Benefits:**", "  - faster training", "  - less memory", "- Plain item here",
             "", "| Method | Bits |", "|---|---|", "| QLoRA | 4 |", "", "Two sentences here. And another one here.",
             "```", "x = 1", "```"]
    pts = key_points(lines, 10)
    assert [(p.kind, p.text) for p in pts] == [
        ("item", "Benefits: faster training"), ("item", "Benefits: less memory"), ("item", "Plain item here"),
        ("row", "Method: QLoRA; Bits: 4"), ("sentence", "Two sentences here."),
        ("sentence", "And another one here."), ("code", "x = 1")]
    assert pts[0].lines == (12, 12) and pts[3].lines == (18, 18) and pts[-1].lines == (21, 23)


def test_the_id_follows_the_question_not_its_answer():
    assert entry_id("g.md", "What is LoRA?") == entry_id("g.md", "what is  LoRA?")
    assert entry_id("g.md", "What is LoRA?") != entry_id("g.md", "What is QLoRA?")


def test_ingest_publishes_the_bank_and_an_edited_answer_keeps_its_id(guides_copy, fake_settings):
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest
    from practice import load_bank

    s = fake_settings(guides_copy)
    first = run_ingest(s, embedder=HashEmbedder(), progress=False)
    assert first.practice["100-llm-interview-questions.md"] >= 90 and "Practice bank:" in first.render()
    bank = {e.question: e for e in load_bank(s)}
    again = run_ingest(s, embedder=HashEmbedder(), progress=False)
    assert again.nothing_changed and {e.id for e in load_bank(s)} == {e.id for e in bank.values()}
    g = guides_copy / "100-llm-interview-questions.md"
    text = g.read_text(encoding="utf-8")
    old = bank["What is a Large Language Model (LLM)?"]
    g.write_text(text.replace("trained on vast amounts of text data", "trained on enormous text corpora"),
                 encoding="utf-8")
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    new = {e.question: e for e in load_bank(s)}["What is a Large Language Model (LLM)?"]
    assert new.id == old.id and new.points[0].text != old.points[0].text and "enormous" in new.points[0].text


def test_an_index_without_a_bank_is_rebuilt_once_with_vectors_reused(guides_copy, fake_settings):
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest
    from ingest.store import IndexLayout

    s = fake_settings(guides_copy)
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    v = IndexLayout(s).require_current()
    meta = json.loads((v.path / "meta.json").read_text())
    meta.pop("practice")                              # as a version written before practice mode
    (v.path / "meta.json").write_text(json.dumps(meta))
    (v.path / BANK_FILE).unlink()
    again = run_ingest(s, embedder=HashEmbedder(), progress=False)
    assert not again.nothing_changed and again.embedded == 0 and "practice" in (again.index_rebuild_reason or "")
