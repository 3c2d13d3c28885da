import pytest

from ingest.chunker import Chunker
from ingest.structure import parse_guide


def words(texts):
    """Fake token counter: whitespace words + 2 special tokens."""
    return [len(t.split()) + 2 for t in texts]


def make(max_tokens=40, target=30, min_tokens=8):
    return Chunker(counter=words, max_tokens=max_tokens, target_tokens=target, min_tokens=min_tokens)


def test_target_above_max_is_rejected():
    with pytest.raises(ValueError, match="target_tokens"):
        make(max_tokens=10, target=20)


def test_every_chunk_fits_and_knows_its_place():
    body = "\n\n".join(f"Paragraph {i} " + "word " * 12 for i in range(8))
    g = parse_guide(f"# G\n\n## A\n\n{body}\n\n## B\n\nshort b text here.\n", "g.md")
    chunks = make().chunk(g, "g.md")
    assert chunks
    for c in chunks:
        assert c.n_tokens <= 40
        assert c.section.startswith("G › ")
        assert 1 <= c.start <= c.end
    a = [c for c in chunks if c.section_path[:1] == ["A"]]
    assert len(a) > 1 and all("Paragraph" in c.text for c in a)


def test_never_crosses_top_level_section_even_when_tiny():
    g = parse_guide("# G\n\n## A\n\ntiny a\n\n## B\n\ntiny b\n", "g.md")
    chunks = make(min_tokens=30).chunk(g, "g.md")
    assert [c.section_path for c in chunks] == [["A"], ["B"]]


def test_tiny_subsections_merge_within_top_level():
    g = parse_guide("# G\n\n## A\n\n### a1\n\ntiny one\n\n### a2\n\ntiny two\n", "g.md")
    chunks = make(min_tokens=12).chunk(g, "g.md")
    assert len(chunks) == 1
    c = chunks[0]
    assert c.section_path == ["A"]
    assert "a1" in c.text and "a2" in c.text and "tiny two" in c.text
    assert (c.start, c.end) == (7, 11)


def test_table_split_between_rows_repeats_header():
    rows = "\n".join(f"| row{i} | " + "v " * 6 + "|" for i in range(12))
    g = parse_guide(f"## T\n\n| name | value |\n|---|---|\n{rows}\n", "t.md")
    chunks = make(max_tokens=40, target=40).chunk(g, "t.md")
    assert len(chunks) > 1
    for c in chunks:
        assert c.text.startswith("| name | value |\n|---|---|")
        assert c.n_tokens <= 40
    all_rows = [l for c in chunks for l in c.text.split("\n") if l.startswith("| row")]
    assert len(all_rows) == 12                       # no row lost, none split


def test_code_block_and_qa_kept_whole_when_they_fit():
    code = "```\n" + "\n".join(f"line{i} = {i}" for i in range(5)) + "\n```"
    text = f"## S\n\nintro words here\n\n{code}\n\n**Q1: Why is it so?**\n\nBecause of reasons.\n"
    chunks = make(max_tokens=40, target=12, min_tokens=0).chunk(parse_guide(text, "s.md"), "s.md")
    assert any(c.text == code for c in chunks)
    assert any(c.text.startswith("**Q1: Why is it so?**") and "Because of reasons." in c.text for c in chunks)


def test_overlong_line_is_split_between_sentences():
    line = " ".join(f"Sentence number {i} has five words." for i in range(20))
    chunks = make(max_tokens=30, target=30, min_tokens=0).chunk(parse_guide(f"## L\n\n{line}\n", "l.md"), "l.md")
    assert len(chunks) > 1
    assert all(c.n_tokens <= 30 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)
    assert all((c.start, c.end) == (3, 3) for c in chunks)


def test_chunk_ids_are_stable_and_unique():
    g = parse_guide("## A\n\n" + "\n\n".join("para " + "x " * 20 for _ in range(4)), "a.md")
    c1 = make().chunk(g, "a.md")
    c2 = make().chunk(g, "a.md")
    assert [c.chunk_id for c in c1] == [c.chunk_id for c in c2]
    assert len({c.chunk_id for c in c1}) == len(c1)
