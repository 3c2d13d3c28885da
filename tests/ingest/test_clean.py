from core.text import normalise_for_match
from ingest.clean import clean_text, drop_web_chrome, is_web_page, repair_mojibake

from pathlib import Path

REAL_GUIDES = Path(__file__).resolve().parents[2] / "data" / "guides"


def test_ftfy_repairs_mac_roman_mojibake():
    text, changed = repair_mojibake("| Flash | O(s) | O(s¬≤) |\nscore ‚âà 0.5\nplain line")
    assert text == "| Flash | O(s) | O(s²) |\nscore ≈ 0.5\nplain line"
    assert changed == 2


def test_residual_run_that_ftfy_leaves_is_repaired():
    # ftfy fixes '¬≤' in this line but leaves '√ó' ('×' read as Mac Roman); the second pass fixes it.
    text, _ = repair_mojibake("O(s¬≤) and O(s√ówindow)")
    assert text == "O(s²) and O(s×window)"


def test_clean_text_is_untouched():
    src = "Attention(Q, K, V) = softmax(QKᵀ / √dₖ) · V — café"
    assert repair_mojibake(src) == (src, 0)


def test_real_theory_notes_have_no_mojibake_left():
    raw = (REAL_GUIDES / "llm-theory-course-notes.md").read_text()
    text, report = clean_text(raw)
    assert report.mojibake_fixed > 0
    for marker in ("¬", "‚Ä", "‚â", "√ó", "Ã", "Œ"):
        assert marker not in text, marker
    assert "O(s²)" in text and "O(s×window)" in text
    assert len(text.split("\n")) == len(raw.split("\n"))  # line numbers survive


def test_web_chrome_dropped_line_numbers_kept():
    raw = "Skip to content\n\nLatest commit\n\nHistory\n1143 lines (822 loc) · 54.5 KB\nFile metadata and controls\n\nLLM Questions\nbody"
    assert is_web_page(raw)
    text, dropped = drop_web_chrome(raw)
    assert dropped == 5
    lines = text.split("\n")
    assert len(lines) == len(raw.split("\n"))
    assert lines[-2:] == ["LLM Questions", "body"]
    assert "Skip to content" not in text and "loc" not in text


def test_markdown_is_not_treated_as_web_page():
    assert not is_web_page("# Title\n\nHistory\n")


def test_normalise_for_match():
    assert normalise_for_match("Ｏ(s²) — **LoRA**: Low-Rank!") == "o s2 lora low rank"
