"""Value types the stages hand each other: an indexed chunk and a ranked hit.

``ingest`` makes ``Chunk`` records and stores ``Chunk.to_payload()`` in the index; ``retrieval``
returns ``Hit`` objects wrapping those payloads; ``answer`` and everything above read them.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

_NS = uuid.UUID("6f1c4f52-2b1e-4c8e-9a55-4a2f3c1d9e10")
SEP = " › "     # between a guide's title and its section headings


@dataclass
class Chunk:
    guide: str                    # guide id: path relative to the guides folder
    guide_title: str
    section_path: list[str]       # below the guide title
    start: int                    # first source line (1-based)
    end: int                      # last source line
    text: str                     # the chunk's own text, as indexed and shown
    top: int = 0                  # top-level section index inside the guide
    n_tokens: int = 0             # word-pieces of embed_text incl. special tokens
    ordinal: int = 0              # position among chunks with the same section in this guide
    kinds: list[str] = field(default_factory=list)

    @property
    def section(self) -> str:
        """'Guide › Section › Subsection'."""
        return SEP.join([self.guide_title, *self.section_path])

    @property
    def embed_text(self) -> str:
        """What is embedded and BM25-indexed: the heading context, then the text."""
        return f"{self.section}\n{self.text}"

    @property
    def chunk_id(self) -> str:
        return str(uuid.uuid5(_NS, f"{self.guide}#{SEP.join(self.section_path)}#{self.ordinal}"))

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.embed_text.encode()).hexdigest()

    def to_payload(self) -> dict:
        return {
            "chunk_id": self.chunk_id,
            "guide": self.guide,
            "guide_title": self.guide_title,
            "section": self.section,
            "section_path": self.section_path,
            "lines": [self.start, self.end],
            "text": self.text,
            "top": self.top,
            "n_tokens": self.n_tokens,
            "ordinal": self.ordinal,
            "kinds": self.kinds,
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_payload(cls, p: dict) -> "Chunk":
        return cls(
            guide=p["guide"], guide_title=p["guide_title"], section_path=list(p["section_path"]),
            start=p["lines"][0], end=p["lines"][1], text=p["text"], top=p.get("top", 0),
            n_tokens=p.get("n_tokens", 0), ordinal=p.get("ordinal", 0), kinds=list(p.get("kinds", [])),
        )


@dataclass
class Hit:
    """One ranked passage: the indexed chunk's payload plus its scores."""
    payload: dict
    score: float
    rank: int
    scores: dict = field(default_factory=dict)     # per stage: fused, rerank, ...

    @property
    def chunk_id(self) -> str:
        return self.payload["chunk_id"]

    @property
    def text(self) -> str:
        return self.payload["text"]

    def to_json(self) -> dict:
        p = self.payload
        out = {
            "rank": self.rank,
            "chunk_id": p["chunk_id"],
            "guide": p["guide"],
            "guide_title": p["guide_title"],
            "section": p["section"],
            "lines": list(p["lines"]),
            "text": p["text"],
            "score": round(float(self.score), 6),
        }
        if self.scores:
            out["scores"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.scores.items()}
        return out
