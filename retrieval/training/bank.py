"""Training pairs from the guides' own interview questions: the practice bank, each question with its answer's chunk.

Ingest publishes the bank with every index version (``practice.jsonl``, ingest/bank.py): ~150 questions
people wrote, each with the guide lines of its model answer. Each becomes a (question, passage) pair:

1. its positives are the chunks of the same guide whose lines overlap the answer's lines; the one with the
   most answer lines is the pair's passage (``answer_chunks``); an answer no chunk holds is reported;
2. a question too close to a dev-set question (eval/golden.jsonl, both parts) is dropped, by the same rules as
   the LLM's questions (``data.DevFilter``: text and MiniLM cosine), otherwise the test part is contaminated;
3. its hard negatives are the real hybrid search's top 20 in order, minus every positive, the positive's
   own section, near copies and other guides' sections on the same topic (``data.NegativePicker``).

No InPars filter here: the question is real, so it is kept even when the hybrid search misses its chunk
(then it teaches the most). The rows have the format of the LLM data plus ``source`` and ``bank_id``, so
training reads both alike.

Example::

    rows, meta = write_bank_data(load_settings())       # seconds: no LLM
    meta["stats"]                                       # questions, no chunk, dropped as dev, kept
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from core.settings import Settings

from ..trained import DATA_SOURCES
from .data import (HYBRID_DEPTH, MAX_NEGATIVES, DataError, DevFilter, NegativePicker, data_paths, load_dev_questions,
                   write_atomic)

if TYPE_CHECKING:
    from core.types import Chunk
    from ingest.bank import Entry
    from retrieval.search import HybridSearcher

BANK_DATA = DATA_SOURCES["bank"]


def answer_chunks(entry: Entry, chunks: Sequence[Chunk]) -> list[int]:
    """Indices of the chunks of the entry's guide that hold lines of its answer, most answer lines first
    (ties: the earlier chunk)."""
    lo, hi = entry.answer_lines
    overlap = {i: min(hi, c.end) - max(lo, c.start) + 1 for i, c in enumerate(chunks) if c.guide == entry.guide}
    found = [i for i, n in overlap.items() if n > 0]
    return sorted(found, key=lambda i: (-overlap[i], chunks[i].start))


def current_bank(version) -> list[Entry]:
    """The bank published with this index version (a missing one says to run `guides ingest`)."""
    from ingest.bank import BANK_FILE, read_bank

    return read_bank(Path(version.path) / BANK_FILE)


def write_bank_data(settings: Settings, *, out: Path = BANK_DATA, searcher: HybridSearcher | None = None
                    ) -> tuple[list[dict], dict]:
    """Pair every bank question with its answer's chunk and hard negatives; write ``out`` (+ its .meta.json).

    ``searcher``: injected for tests (default: ``HybridSearcher`` over the current index with the settings'
    embedder, closed again here).
    """
    from ingest.embed import load_embedder
    from retrieval.search import HybridSearcher, IndexHandle

    own = searcher is None
    if own:
        searcher = HybridSearcher(settings, embedder=load_embedder(settings.embed_model), index=IndexHandle(settings))
    try:
        return _write_bank_data(searcher, out=Path(out))
    finally:
        if own:
            searcher.index.close()


def bank_rows(entries: Sequence[Entry], chunks: Sequence[Chunk], searcher: HybridSearcher, picker: NegativePicker,
              dev: DevFilter) -> tuple[list[dict], dict]:
    """The training rows of ``entries`` and what was left out (see the module docstring)."""
    stats = {"questions": len(entries), "no_chunk": [], "dropped_dev": 0, "dev_drops": [], "no_negatives": 0,
             "kept": 0, "positive_in_top20": 0, "positive_first": 0, "multi_chunk_answers": 0,
             "negatives_left_out": {}}
    rows = []
    for e in entries:
        pos = answer_chunks(e, chunks)
        if not pos:
            stats["no_chunk"].append({"bank_id": e.id, "guide": e.guide, "answer_lines": list(e.answer_lines)})
            continue
        d, why = dev.closest(e.question)
        if d is not None:
            stats["dropped_dev"] += 1
            stats["dev_drops"].append({"question": e.question, "dev": d, "why": why})
            continue
        stats["multi_chunk_answers"] += len(pos) > 1
        hits, _ = searcher.search(e.question, mode="hybrid", top_k=HYBRID_DEPTH)
        ids = [h.chunk_id for h in hits]
        others = {chunks[i].chunk_id for i in pos[1:]}
        negs, left_out = picker.pick(e.question, pos[0], [c for c in ids if c not in others])
        left_out["another chunk of the answer"] = len(others & set(ids))
        for k, v in left_out.items():
            stats["negatives_left_out"][k] = stats["negatives_left_out"].get(k, 0) + v
        if not negs:
            stats["no_negatives"] += 1
            continue
        c = chunks[pos[0]]
        rank = ids.index(c.chunk_id) + 1 if c.chunk_id in ids else None
        stats["positive_in_top20"] += rank is not None
        stats["positive_first"] += rank == 1
        rows.append({"query": e.question, "chunk_id": c.chunk_id, "content_hash": c.content_hash,
                     "hybrid_rank": rank, "negatives": [{"chunk_id": chunks[j].chunk_id,
                                                         "content_hash": chunks[j].content_hash} for j in negs],
                     "source": "bank", "bank_id": e.id})
        stats["kept"] += 1
    return rows, stats


def _write_bank_data(searcher: HybridSearcher, *, out: Path) -> tuple[list[dict], dict]:
    from core.text import tokenize

    t = time.perf_counter()
    version = searcher.index.refresh()
    chunks, vectors = version.chunks(), version.vectors()
    entries = current_bank(version)
    if not entries:
        raise DataError(f"The practice bank of index version {version.vid} is empty: the guides hold no "
                        f"question with an answer; nothing to train on from the bank.")
    picker = NegativePicker(chunks, vectors, searcher.index.bm25.idf, tokenize)
    dev = DevFilter(load_dev_questions(), embedder=searcher.embedder)
    rows, stats = bank_rows(entries, chunks, searcher, picker, dev)
    meta = {"source": "bank: the practice bank published with the index (ingest/bank.py)",
            "index_version": version.vid, "chunks_in_index": len(chunks), "hybrid_depth": HYBRID_DEPTH,
            "max_negatives": MAX_NEGATIVES, "filters": {"dev_cos": dev.max_cos}, "stats": stats,
            "seconds": round(time.perf_counter() - t, 1), "command": "guides train-reranker --write-data bank"}
    data_file, meta_file = data_paths(out)
    write_atomic(data_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_atomic(meta_file, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return rows, meta
