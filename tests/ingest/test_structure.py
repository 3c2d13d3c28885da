from ingest.structure import parse_guide, title_from_filename

MD = """# My Guide

## Table of Contents
1. [Basics](#basics)

## Basics

Intro paragraph.

### Q1: What is X?
**Answer:** X is a thing.

```python
# not a heading
x = 1
```

## Advanced

| a | b |
|---|---|
| 1 | 2 |
"""


def test_markdown_title_sections_and_fences():
    g = parse_guide(MD, "my.md")
    assert g.title == "My Guide" and g.format == "markdown"
    paths = [s.path for s in g.sections]
    assert ["Table of Contents"] not in paths                     # ToC dropped
    assert ["Basics", "Q1: What is X?"] in paths
    assert not any("not a heading" in p[-1] for p in paths if p)   # '#' inside a fence is code
    q1 = next(s for s in g.sections if s.path == ["Basics", "Q1: What is X?"])
    kinds = [u.kind for u in q1.units]
    assert kinds == ["para", "code"]
    assert q1.units[1].start == 13 and q1.units[1].end == 16
    adv = next(s for s in g.sections if s.path == ["Advanced"])
    assert adv.units[0].kind == "table"
    basics = next(s for s in g.sections if s.path == ["Basics"])
    assert basics.top != adv.top


def test_title_line_is_not_body_text():
    g = parse_guide(MD, "my.md")
    assert all("My Guide" not in u.text for s in g.sections for u in s.units)


def test_sections_before_first_top_level_heading_keep_their_level():
    g = parse_guide("### Early\ntext a\n\n## Main\ntext b\n\n### Sub\ntext c\n", "notes.md")
    assert g.title == "Notes"
    assert [s.path for s in g.sections] == [["Early"], ["Main"], ["Main", "Sub"]]


PLAIN = """


Web Guide

Intro text of the page.


1. First Topic

Body of first topic.

Sub Title Here

Sub body text.

  1. a list item that is short

  2. another short item

3. Not the third topic: a long numbered line in the body text, which is a list item.


2. Second Topic

More body.

Attention(Q, K) = softmax(x)

After formula.
"""


def test_plaintext_numbered_and_short_titles():
    g = parse_guide(PLAIN, "page.txt")
    assert g.format == "plaintext"
    assert g.title == "Web Guide"
    paths = [s.path for s in g.sections if s.path]
    assert ["1. First Topic"] in paths
    assert ["1. First Topic", "Sub Title Here"] in paths
    assert ["2. Second Topic"] in paths
    # a numbered list item does not continue the section numbering; a formula is not a title
    assert not any("list item" in p[-1] or "third" in p[-1] for p in paths)
    assert not any("softmax" in p[-1] for p in paths)


def test_question_and_answer_are_one_unit():
    text = "## S\n\n**Q1: Why?**\n\n**Expected Answer:**\n- because\n\n**Q2: How?**\n\nLike this.\n"
    g = parse_guide(text, "t.md")
    units = g.sections[0].units
    assert [u.kind for u in units] == ["qa", "qa"]
    assert "because" in units[0].text and units[0].start == 3 and units[0].end == 6


def test_title_from_filename():
    assert title_from_filename("dir/llm-theory_notes.md") == "LLM Theory Notes"


SETEXT = """Guide Title
===========

Part One
--------

text one

~~~
# not a heading (tilde fence)
~~~

    # not a heading either (indented code)

Part Two
--------

- item a
- item b

- loose item c
  # heading-like line inside a list item is list text

---

| x | y |
|---|---|
| 1 | 2 |
"""


def test_setext_headings_tilde_fences_and_indented_code():
    g = parse_guide(SETEXT, "setext.md")
    assert g.format == "markdown" and g.title == "Guide Title"
    assert [s.path for s in g.sections] == [["Part One"], ["Part Two"]]
    one = g.sections[0]
    assert [(u.kind, u.start, u.end) for u in one.units] == [("para", 7, 7), ("code", 9, 11), ("code", 13, 13)]
    assert one.start == 4                     # the heading line, not its underline


def test_lists_tables_and_thematic_breaks():
    two = parse_guide(SETEXT, "setext.md").sections[1]
    # a tight run of items is one unit; an item after a blank line starts a new one; '---' is not text
    assert [(u.kind, u.start, u.end) for u in two.units] == [("list", 18, 19), ("list", 21, 22), ("table", 26, 28)]
    assert "inside a list item" in two.units[1].text
    assert all(u.text.strip() != "---" for u in two.units)


def test_pipe_lines_without_a_delimiter_row_are_not_a_table():
    g = parse_guide("## S\n\n| just | pipes |\n| more | pipes |\n", "p.md")
    assert [u.kind for u in g.sections[0].units] == ["para"]


def test_heading_text_drops_markup_like_a_reader_sees_it():
    g = parse_guide("## **Bold** [link](http://x) and `code`:\n\ntext\n", "h.md")
    assert g.sections[0].path == ["Bold link and code"]
