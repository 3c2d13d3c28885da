"""Text handling every stage shares: tokenising, stopwords, stemming, matching normalisation.

BM25 (ingest), the rerankers (retrieval) and the citation checks (answer) all read words the
same way through this module, so a term that matches in one stage matches in the others.

Example::

    tokenize("What are rotary embeddings?")     # ['rotari', 'embed']
    normalise_for_match("Q/K vectors")          # 'q k vectors'
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
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its me my of on or our s so such t than that the their them then there these they
    this those to was we were what when where which while who whom why will with would you your
    about also am any because being both each few more most other own same should some very just
    does doing don explain describe tell difference between""".split()
)


_STEMS: dict[str, str] = {}
_STEMS_MAX = 2_000_000      # words; past this, stems are computed without caching (bounded memory)


def tokenize(text: str) -> list[str]:
    """NFKC + casefold, alphanumeric words, stopwords dropped, Snowball-stemmed."""
    t = unicodedata.normalize("NFKC", text).casefold()
    words = [w for w in re.findall(r"[a-z0-9]+", t) if w not in STOPWORDS]
    stems = _STEMS
    missing = [w for w in set(words) if w not in stems]
    if missing:
        got = stemmer_for_thread().stemWords(missing)
        if len(stems) < _STEMS_MAX:
            stems.update(zip(missing, got))
        else:
            local = dict(zip(missing, got))
            return [stems.get(w) or local[w] for w in words]
    return [stems[w] for w in words]


def normalise_for_match(text: str) -> str:
    """NFKC, casefold, every run of non [a-z0-9] to one space: how evidence phrases are matched."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^a-z0-9]+", " ", t).strip()
