"""BM25 as Qdrant sparse vectors, scoring exactly like ``rank_bm25.BM25Okapi``.

Documents store ``tf*(k1+1) / (tf + k1*(1 - b + b*dl/avgdl))`` per term; a query stores
``idf(term) * count`` with rank-bm25's Okapi IDF (negative IDFs floored at
``epsilon * mean idf``). Qdrant's dot product of the two is then the Okapi score. The
corpus statistics (N, document frequencies) are saved with the index version, so the IDF
is computed here rather than by Qdrant's ``Modifier.IDF`` (whose formula differs).

Example (``tokenize`` is ``core.text.tokenize``)::

    enc = BM25Encoder.fit([tokenize(t) for t in texts])
    idx, vals = enc.encode_document(tokenize(texts[0]))
    q_idx, q_vals = enc.encode_query(tokenize("what is lora"))
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

def term_id(term: str) -> int:
    """A stable 32-bit id for a term (crc32: no collisions over this corpus's vocabulary)."""
    return zlib.crc32(term.encode("utf-8"))


@dataclass
class BM25Encoder:
    n_docs: int
    avgdl: float
    df: dict[str, int]
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25
    idf: dict[str, float] = field(init=False)

    def __post_init__(self):
        # rank_bm25.BM25Okapi._calc_idf
        idf, neg, total = {}, [], 0.0
        for term, n in self.df.items():
            v = math.log(self.n_docs - n + 0.5) - math.log(n + 0.5)
            idf[term] = v
            total += v
            if v < 0:
                neg.append(term)
        floor = self.epsilon * (total / len(idf)) if idf else 0.0
        for term in neg:
            idf[term] = floor
        self.idf = idf

    @classmethod
    def fit(cls, docs: Iterable[list[str]], *, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> "BM25Encoder":
        df: Counter[str] = Counter()
        n = total = 0
        for d in docs:                    # one pass: ``docs`` may be a generator (large corpora)
            df.update(set(d))
            n += 1
            total += len(d)
        avgdl = total / n if n else 0.0
        return cls(n_docs=n, avgdl=avgdl, df=dict(df), k1=k1, b=b, epsilon=epsilon)

    def encode_document(self, tokens: list[str]) -> tuple[list[int], list[float]]:
        dl = len(tokens)
        norm = self.k1 * (1 - self.b + self.b * dl / self.avgdl) if self.avgdl else self.k1
        tf = Counter(tokens)
        idx, vals = [], []
        for term, f in sorted(tf.items()):
            idx.append(term_id(term))
            vals.append(f * (self.k1 + 1) / (f + norm))
        return idx, vals

    def encode_query(self, tokens: list[str]) -> tuple[list[int], list[float]]:
        """Terms unseen in the corpus are dropped (rank-bm25 gives them no score either)."""
        qf = Counter(t for t in tokens if t in self.idf)
        items = sorted(qf.items())
        return [term_id(t) for t, _ in items], [self.idf[t] * c for t, c in items]

    def to_dict(self) -> dict:
        return {"n_docs": self.n_docs, "avgdl": self.avgdl, "df": self.df,
                "k1": self.k1, "b": self.b, "epsilon": self.epsilon}

    @classmethod
    def from_dict(cls, d: dict) -> "BM25Encoder":
        return cls(n_docs=d["n_docs"], avgdl=d["avgdl"], df=d["df"], k1=d["k1"], b=d["b"], epsilon=d["epsilon"])
