"""Text handling every stage shares: words, word lists, stemming, sentences and clauses.

BM25 (ingest), the rerankers (retrieval), and the citation checks, refusal, query rewriting and
evidence selection (answer) all read text through this module, so a word that matches in one stage
matches in the others, and a sentence ends in the same place wherever it is cut.

- Words: ``WORD`` (a casefolded alphanumeric run, the unit of matching) and ``TERM`` (a term as
  written, inner hyphens and dots kept: "DeepSeek-R1", "top-p").
- Word lists: ``STOPWORDS`` (BM25), ``GENERIC_WORDS`` (no topic in an answer sentence),
  ``QUESTION_SCAFFOLD`` and ``CONVERSATIONAL_WORDS`` (how a question is asked, not what about),
  ``ANAPHORA`` and ``FOLLOW_UP_LEADS`` (a follow-up leaning on the previous turn), ``NOT_NAMES``
  (capitalised words that are plain English).
- ``tokenize`` (BM25 terms), ``content_stems`` / ``content_tokens`` (an answer sentence's content words).
- ``sentence_spans`` (the one sentence splitter, with offsets) and ``clause_spans`` (for the two
  callers that need clauses: prompt-injection checks and sentence-initial capitals).

Example::

    tokenize("What are rotary embeddings?")                # ['rotari', 'embed']
    content_stems("The models are often merging weights")  # ['model', 'merg', 'weight']
    normalise_for_match("Q/K vectors")                     # 'q k vectors'
    sentence_spans("It has 46.7B params, e.g. eight. [1] Next.")   # [(0, 36), (37, 42)]
"""

from __future__ import annotations

import re
import threading
import unicodedata

import snowballstemmer

_local = threading.local()


def stemmer_for_thread():
    """Snowball stemmers keep state between calls: one per thread, or concurrent calls corrupt each other."""
    s = getattr(_local, "stemmer", None)
    if s is None:
        s = _local.stemmer = snowballstemmer.stemmer("english")
    return s


# --------------------------------------------------------------------------- words
WORD = re.compile(r"[a-z0-9]+")                 # in NFKC-casefolded text: the unit every match compares
TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.]*[A-Za-z0-9]|[A-Za-z0-9]")   # as written: "DeepSeek-R1", "8x7B"


def normalise(text: str) -> str:
    """NFKC, and '8×7B' written '8x7B' (one token either way)."""
    return re.sub(r"(?<=\d)\s?×\s?(?=\d)", "x", unicodedata.normalize("NFKC", text))


def words(text: str) -> list[str]:
    """NFKC-casefolded alphanumeric words, in order: 'Q/K vectors' -> ['q', 'k', 'vectors']."""
    return WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def terms(text: str) -> list[str]:
    """Terms as written (NFKC), inner hyphens, dots and underscores kept: 'top-p', 'GPT-4', 'DeepSeek-R1'."""
    return TERM.findall(unicodedata.normalize("NFKC", text))


def normalise_for_match(text: str) -> str:
    """NFKC, casefold, every run of non [a-z0-9] to one space: how evidence phrases are matched."""
    return " ".join(words(text))


# --------------------------------------------------------------------------- word lists
# Function words and question framing BM25 leaves out of its terms.
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its me my of on or our s so such t than that the their them then there these they
    this those to was we were what when where which while who whom why will with would you your
    about also am any because being both each few more most other own same should some very just
    does doing don explain describe tell difference between""".split()
)

# Words that carry no topic in an answer sentence ("the model uses ..."), on top of STOPWORDS.
GENERIC_WORDS = frozenset("""
    use used uses using also can may might must need needs make makes made like get gets
    well way ways often usually typically generally however therefore thus e g eg ie etc example
    examples allow allows help helps important key main based different various several many much
    passage passages guide guides question answer answers according
""".split())

# How a question is asked, not what it is about: interrogatives, auxiliaries, requests ("explain", "tell me"),
# and comparison or definition framing ("the difference between", "pros and cons", "the role of").
QUESTION_SCAFFOLD = frozenset("""
    what why how when where which who whom is are was were do does did can could should would will may might must
    explain describe tell me briefly define definition mean means purpose role main
    difference differences different between compare compared comparison
    work works working advantages disadvantages pros cons
""".split())

# Casual words of a spoken question ("walk me through", "do people actually", "regular LoRA"): no topic as whole
# words, but stemmed some would name one ('normal' is the stem of 'normalization', 'regular' of 'regularization'),
# so they are skipped as whole words only (query rewriting), never as stems (evidence scoring).
CONVERSATIONAL_WORDS = frozenset("""
    whose shall please us give show walk through versus vs say says said meant decide decides choose chooses
    conclude concluded make makes made handle handles get gets go goes people someone regular normal usual typical
    actually really
""".split())

# Words that point back to an earlier turn ("how much memory does it save?").
ANAPHORA = frozenset("""it its itself this that these those they them their theirs such same one ones
    former latter above there he she his her""".split())

# Openings of a follow-up that continues the previous turn ("and what about ...", "so why ...").
FOLLOW_UP_LEADS = ("and ", "so ", "but ", "also ", "what about", "how about", "then ", "why not", "and what", "ok ",
                   "okay ")

# Capitalised words that are plain English, not names of models, methods or places ("The", "What", "Please").
NOT_NAMES = frozenset("""i a an the it this that these those what why how when where which who whom whose
    is are can could does do did should would will if in on for to of and or but so also please hi hello""".split())


# --------------------------------------------------------------------------- stems
_STEMS: dict[str, str] = {}
_STEMS_MAX = 2_000_000      # words; past this, stems are computed without caching (bounded memory)


def stem_words(ws: list[str]) -> list[str]:
    """Snowball stems of ``ws`` (lower-case words), in order; cached across calls."""
    stems = _STEMS
    missing = [w for w in set(ws) if w not in stems]
    if missing:
        got = stemmer_for_thread().stemWords(missing)
        if len(stems) < _STEMS_MAX:
            stems.update(zip(missing, got))
        else:
            local = dict(zip(missing, got))
            return [stems.get(w) or local[w] for w in ws]
    return [stems[w] for w in ws]


def tokenize(text: str) -> list[str]:
    """BM25 terms: NFKC + casefold, alphanumeric words, stopwords dropped, Snowball-stemmed."""
    return stem_words([w for w in words(text) if w not in STOPWORDS])


def _is_content(w: str) -> bool:
    return w not in STOPWORDS and w not in GENERIC_WORDS and (len(w) > 1 or w.isdigit())


def content_tokens(text: str) -> list[tuple[str, int, int]]:
    """(stem, start, end) of each content word of ``text``, in order; offsets index ``normalise(text)``."""
    t = normalise(text).casefold()
    kept = [(m.group(0), m.start(), m.end()) for m in WORD.finditer(t) if _is_content(m.group(0))]
    stems = stem_words([w for w, _, _ in kept])
    return [(s, a, b) for s, (_, a, b) in zip(stems, kept)]


def content_stems(text: str) -> list[str]:
    """Content words (minus STOPWORDS and GENERIC_WORDS, single letters dropped), NFKC-casefolded and stemmed."""
    return stem_words([w for w in WORD.findall(normalise(text).casefold()) if _is_content(w)])


# Stems of QUESTION_SCAFFOLD that are content words: what evidence scoring leaves out of a question.
QUESTION_SCAFFOLD_STEMS = frozenset(content_stems(" ".join(sorted(QUESTION_SCAFFOLD))))


# --------------------------------------------------------------------------- sentences and clauses
ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "approx.", "fig.", "eq.", "cf.", "al.")
# A sentence ends at . ! or ?, then any citation markers ("[2]", "[1, 3]"), then whitespace before what can start
# a sentence. Decimals ("46.7B") never end one: no whitespace follows their point.
# A markdown list item's marker ("- ", "  * ", "• ", "2. ", "3) "); group 1 is its indent.
LIST_ITEM = re.compile(r"^([ \t]*)(?:[-*+•]|\d{1,2}[.)])[ \t]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])((?:\s*\[[\d,;\s]+\])*)(\s+)(?=[A-Z0-9\"'(*\-•])")
_CLAUSE_END = re.compile(r"(?<=[.?!;:])\s+")
_CLAUSE_OR_LIST = re.compile(r"(?<=[.?!;:])\s+|,\s*(?:and\s+|then\s+)?|\s+(?:and|then)\s+(?=\w)")


def ends_with_abbreviation(text: str) -> bool:
    """'... e.g.' or '... a.' (an initial or list letter): a full stop that ends no sentence."""
    low = text.lower()
    return low.endswith(ABBREVIATIONS) or bool(re.search(r"(^|\s)[a-z]\.$", low))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, in order; whitespace-only pieces are left out.

    A line break always ends a sentence (a list item or table row is one). Within a line a sentence ends
    after . ! or ? followed by whitespace and a capital, digit, quote, bracket or bullet, but not after an
    abbreviation (``ABBREVIATIONS``) or a single letter ("a."); citation markers right after the full stop
    stay with their sentence ("It merges. [1]").
    """
    spans = []
    for m in re.finditer(r"[^\n]+", text):
        line_start, line = m.start(), m.group(0)
        start = 0
        for b in _SENTENCE_END.finditer(line):
            if ends_with_abbreviation(line[start:b.start()]):
                continue
            spans.append((line_start + start, line_start + b.end(1)))
            start = b.end()
        spans.append((line_start + start, line_start + len(line)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def clause_spans(text: str, *, lists: bool = False) -> list[tuple[int, int]]:
    """(start, end) of every piece of ``text`` between clause breaks, empty pieces included, in order.

    A clause break is whitespace after . ? ! ; or : whatever follows (unlike ``sentence_spans``, a lower-case
    word may start a clause: "ignore this. say hi"). ``lists``: commas (with a following "and"/"then") and
    " and " / " then " break too, so each item of "A, then B and C" is its own clause.
    """
    out, pos = [], 0
    for m in (_CLAUSE_OR_LIST if lists else _CLAUSE_END).finditer(text):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(text)))
    return out


# Inline markdown of the guides, as a reader should see it: **bold**, __bold__, *italic*, _italic_, `code`.
_INLINE_MD = (
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    re.compile(r"(?<![\w])__(?=\S)(.+?)(?<=\S)__(?![\w])"),
    re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])"),
    re.compile(r"(?<![\w])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w])"),
    re.compile(r"(`+)([^`\n]+?)\1"),
)


def plain_inline(text: str) -> str:
    """``text`` with the guides' inline markdown markers removed and the words kept ("**Optimizers**: AdamW"
    -> "Optimizers: AdamW"); snake_case words and lone asterisks (2 * 3) are left alone."""
    for pat in _INLINE_MD:
        text = pat.sub(lambda m: m.group(m.lastindex), text)
    return text


def line_range(lines) -> str:
    """'line 92' for one line, 'lines 92–95' for several (``lines``: a (first, last) pair)."""
    a, b = lines[0], lines[1]
    return f"line {a}" if a == b else f"lines {a}–{b}"
