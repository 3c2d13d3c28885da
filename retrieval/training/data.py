"""Training data for the reranker, InPars-style: the bundled LLM writes questions for chunks.

`guides train-reranker --write-data llm` runs it once and keeps the result in the repository
(``retrieval/data/reranker_train.jsonl`` plus ``reranker_train.meta.json``); training reads
that file, so a fresh machine trains without running the LLM. `--write-data llm-small` does the
same with the bundled 0.5B for the chunks the first file does not cover
(``reranker_train_small.jsonl``). For a seeded subset of the indexed chunks
(``settings.reranker_data_chunks``):

1. the LLM named by ``settings.reranker_data_llm`` (default ``bundled``, Qwen2.5-Coder-1.5B)
   writes up to 3 questions the chunk answers (greedy; ``core.llm.load_llm`` + ``complete``);
2. a question too close to any dev-set question (eval/golden.jsonl, every turn of both parts)
   is dropped: same words after normalisation, word-set Jaccard >= 0.8, character similarity
   >= 0.85, or MiniLM cosine >= 0.9 (decontamination);
3. the real hybrid search (``retrieval.search.HybridSearcher`` over the current index, the one
   every question goes through) runs the question; it is kept only when its own chunk is in the
   top 20 (InPars' filter);
4. its hard negatives are the other top-20 hits in hybrid order, minus the chunk's own section,
   near copies of the chunk (vector cosine >= 0.9), and sections of other guides on the same
   topic: a heading that names the question's rarer terms, or whose words largely repeat the
   chunk's own heading (the five guides overlap; such a hit is most likely relevant too).

One JSONL line per kept question::

    {"query": "...", "chunk_id": "...", "content_hash": "...", "hybrid_rank": 3,
     "negatives": [{"chunk_id": "...", "content_hash": "..."}, ...]}

Example::

    rows, meta = write_training_data(load_settings(), progress=True)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from core.settings import Settings
from core.text import STOPWORDS, normalise_for_match

from ..trained import DATA_FILE, ROOT

if TYPE_CHECKING:
    from core.types import Chunk
    from retrieval.search import HybridSearcher

DEV_SET = ROOT / "eval" / "golden.jsonl"
PROMPT_VERSION = 2
HYBRID_DEPTH = 20            # the question's own chunk must be in this many hybrid hits (and negatives come from them)
MAX_NEGATIVES = 7
NEAR_COPY_COS = 0.9          # a hit this close (chunk vectors) to the positive is not a negative
DEV_COS = 0.9                # a question this close (MiniLM cosine) to a dev question is dropped
TOPIC_IDF = 2.0              # query terms at least this rare (BM25 IDF) name its topic
HEADING_JACCARD = 0.5        # another guide's section whose heading words repeat the positive's this much

SYSTEM = (
    "You write search queries for testing a search engine over LLM interview study guides. Given a passage, "
    "write 3 different questions that someone preparing for an LLM interview might type, and that the passage "
    "answers. Use your own words, not the passage's wording; vary the form (why, how, what, compare). "
    "One question per line, no numbering, nothing else."
)


class DataError(RuntimeError):
    """The training data cannot be written or read; the message says how to fix it."""


# --------------------------------------------------------------------------- chunks and questions


def chunk_order(chunks: Sequence[Chunk], seed: int, *, min_words: int = 25) -> list[int]:
    """Indices of the chunks long enough to ask about, in a seeded order (the first n are used)."""
    ok = [i for i, c in enumerate(chunks) if len(c.text.split()) >= min_words]
    return sorted(ok, key=lambda i: hashlib.sha256(f"{seed}:{chunks[i].chunk_id}".encode()).hexdigest())


def question_messages(c: Chunk, *, max_chars: int = 900) -> list[dict]:
    """The chat the LLM answers with questions for one chunk."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Section: {c.section}\nPassage:\n{c.text[:max_chars]}"}]


def _clean_line(s: str) -> str:
    s = re.sub(r"^\s*(?:[-*•]\s*|\d+[.)]\s*|Q\d*\s*[:.]\s*|(?:question|query)\s*\d*\s*:\s*)+", "", s.strip(), flags=re.I)
    return " ".join(s.strip().strip("*_\"“”'` ").split())


def parse_questions(text: str, limit: int = 3) -> list[str]:
    """The distinct questions (3 to 30 words, ending in '?') in an LLM reply, at most ``limit``."""
    out: list[str] = []
    for line in text.split("\n"):
        q = _clean_line(line)
        if q.endswith("?") and 3 <= len(q.split()) <= 30 and q.lower() not in {x.lower() for x in out}:
            out.append(q)
    return out[:limit]


# --------------------------------------------------------------------------- dev-set decontamination


def load_dev_questions(path: Path = DEV_SET) -> list[str]:
    """Every turn of every dev-set conversation (both parts of the split)."""
    if not path.is_file():
        raise DataError(f"The dev set {path} is missing; decontamination needs it (restore eval/golden.jsonl).")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.extend(t for t in json.loads(line).get("turns", []) if isinstance(t, str))
    return out


def near_duplicate(a: str, b: str) -> bool:
    """Equal after normalisation, >= 0.8 word-set Jaccard, or >= 0.85 character similarity."""
    na, nb = normalise_for_match(a), normalise_for_match(b)
    if na == nb:
        return True
    wa, wb = set(na.split()), set(nb.split())
    if wa and wb and len(wa & wb) / len(wa | wb) >= 0.8:
        return True
    return SequenceMatcher(None, na, nb).ratio() >= 0.85


class DevFilter:
    """Says which questions are too close to a dev-set question (by text, and by embedding when given one)."""

    def __init__(self, dev: list[str], *, embedder=None, max_cos: float = DEV_COS):
        self.dev = dev
        self.embedder = embedder
        self.max_cos = max_cos
        self._dev_vecs = embedder.embed(dev) if embedder is not None and dev else None

    def closest(self, question: str) -> tuple[str | None, str]:
        """(the dev question it is too close to, why) or (None, '')."""
        for d in self.dev:
            if near_duplicate(question, d):
                return d, "text"
        if self._dev_vecs is not None:
            sims = self._dev_vecs @ self.embedder.embed([question])[0]
            j = int(np.argmax(sims))
            if float(sims[j]) >= self.max_cos:
                return self.dev[j], f"cosine {float(sims[j]):.2f}"
        return None, ""


# --------------------------------------------------------------------------- hard negatives

# Heading words that say nothing about the topic, beyond the shared stopwords ('Q18: LoRA vs QLoRA').
HEADING_FILLER = frozenset({"vs", "versus", "q"})


def heading_words(section_path: Sequence[str]) -> set[str]:
    """The content words of a chunk's last heading ('Q18: Explain LoRA' -> {'lora'})."""
    last = section_path[-1] if section_path else ""
    return {w for w in normalise_for_match(re.sub(r"^\s*Q\d+\s*[:.]", "", last)).split()
            if w not in STOPWORDS and w not in HEADING_FILLER and not w.isdigit()}


@dataclass
class NegativePicker:
    """Hard negatives for a question from the hybrid's ranked hits (see the module docstring)."""
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    idf: dict[str, float]
    tokenize: Callable[[str], list[str]]
    near_copy_cos: float = NEAR_COPY_COS
    topic_idf: float = TOPIC_IDF
    heading_jaccard: float = HEADING_JACCARD
    max_negatives: int = MAX_NEGATIVES
    index_of: dict[str, int] = field(init=False)
    _heading_terms: list[set[str]] = field(init=False)

    def __post_init__(self):
        self.index_of = {c.chunk_id: i for i, c in enumerate(self.chunks)}
        self._heading_terms = [set(self.tokenize(" ".join(c.section_path))) for c in self.chunks]

    def why_not(self, query: str, pos: int, cand: int) -> str | None:
        """Why ``cand`` may not be a negative for (query, pos), or None when it may."""
        p, c = self.chunks[pos], self.chunks[cand]
        if cand == pos:
            return "positive"
        if (c.guide, tuple(c.section_path)) == (p.guide, tuple(p.section_path)):
            return "same section"
        if float(self.vectors[cand] @ self.vectors[pos]) >= self.near_copy_cos:
            return "near copy"
        topic = {t for t in self.tokenize(query) if self.idf.get(t, 0.0) >= self.topic_idf}
        if topic & self._heading_terms[cand]:
            return "names the topic"
        if c.guide != p.guide:
            a, b = heading_words(p.section_path), heading_words(c.section_path)
            if a and b and len(a & b) / len(a | b) >= self.heading_jaccard:
                return "same heading, other guide"
        return None

    def pick(self, query: str, pos: int, ranked_ids: list[str]) -> tuple[list[int], dict[str, int]]:
        """Up to ``max_negatives`` negatives in hybrid order, and how many hits each rule left out."""
        out, dropped = [], {}
        for cid in ranked_ids:
            i = self.index_of.get(cid)
            if i is None:
                continue
            why = self.why_not(query, pos, i)
            if why:
                dropped[why] = dropped.get(why, 0) + 1
            elif len(out) < self.max_negatives:
                out.append(i)
        return out, dropped


# --------------------------------------------------------------------------- the whole run


def _ref(c: Chunk) -> dict:
    return {"chunk_id": c.chunk_id, "content_hash": c.content_hash}


def data_paths(path: Path = DATA_FILE) -> tuple[Path, Path]:
    return path, path.with_suffix(".meta.json")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_training_data(settings: Settings, *, out: Path = DATA_FILE, progress: bool = True,
                        llm=None, searcher: HybridSearcher | None = None, llm_name: str | None = None,
                        skip_chunks_of: Sequence[Path] = (), command: str = "guides train-reranker --write-data",
                        ) -> tuple[list[dict], dict]:
    """Generate the training questions for the current index and write ``out`` (+ its .meta.json).

    ``llm_name``: the LLM (a GUIDES_LLM name) that writes them (default ``settings.reranker_data_llm``);
    ``skip_chunks_of``: data files whose chunks already have questions: those chunks are not asked
    again, the next ones in the seeded order are (a second LLM source covers new chunks).

    Work is kept per chunk in ``<out>.partial`` so an interrupted run resumes where it stopped.
    ``llm`` / ``searcher``: injected for tests (default: ``core.llm.load_llm`` on
    ``settings.reranker_data_llm``, and ``HybridSearcher`` over an ``IndexHandle`` on the current
    index with ``load_embedder(settings.embed_model)``: the search every question goes through).
    What this function opens itself, it closes.
    """
    from core.llm import load_llm
    from ingest.embed import load_embedder
    from retrieval.search import HybridSearcher, IndexHandle

    own_searcher = searcher is None
    if own_searcher:
        searcher = HybridSearcher(settings, embedder=load_embedder(settings.embed_model), index=IndexHandle(settings))
    own_llm = llm is None
    if own_llm:
        llm = load_llm(settings.model_copy(update={"llm": llm_name or settings.reranker_data_llm,
                                                   "llm_threads": settings.reranker_train_threads,
                                                   "llm_context_window": 2048}))
    try:
        return _write_training_data(settings, out=Path(out), progress=progress, llm=llm, searcher=searcher,
                                    skip=covered_chunks(skip_chunks_of), command=command)
    finally:
        if own_searcher:
            searcher.index.close()
        if own_llm and hasattr(llm, "close"):
            llm.close()


def covered_chunks(paths: Sequence[Path]) -> frozenset[tuple[str, str]]:
    """(chunk id, content hash) of the chunks the rows of these data files ask about (a missing file says
    which command writes it); a chunk edited since has no questions for its new text, so it is not covered."""
    return frozenset((r["chunk_id"], r["content_hash"]) for p in paths for r in read_training_data(p))


def _write_training_data(settings: Settings, *, out: Path, progress: bool, llm, searcher: HybridSearcher,
                         skip: frozenset[tuple[str, str]] = frozenset(), command: str = "") -> tuple[list[dict], dict]:
    from tqdm import tqdm

    from core.llm import complete
    from core.text import tokenize

    t_start = time.perf_counter()
    version = searcher.index.refresh()
    chunks, vectors = version.chunks(), version.vectors()
    if len(chunks) < 2:
        raise DataError(f"The index has {len(chunks)} chunk(s); add guides to {settings.guides_dir} and run "
                        f"`guides ingest`.")
    picker = NegativePicker(chunks, vectors, searcher.index.bm25.idf, tokenize)
    dev = DevFilter(load_dev_questions(), embedder=searcher.embedder)
    order = [i for i in chunk_order(chunks, settings.reranker_seed)
             if (chunks[i].chunk_id, chunks[i].content_hash) not in skip][: settings.reranker_data_chunks]

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    done: dict[str, dict] = {}
    if partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec.get("prompt_version") == PROMPT_VERSION and rec.get("llm") == llm.name:
                done[rec["chunk_id"]] = rec
    stats = {"questions_written": 0, "dropped_dev": 0, "dropped_not_in_top20": 0, "kept": 0,
             "negatives_left_out": {}, "dev_drops": []}
    llm_seconds = 0.0
    with open(partial, "a", encoding="utf-8") as part_f:
        bar = tqdm(order, desc="LLM questions for chunks", unit="chunk", disable=not progress, file=sys.stderr)
        for i in bar:
            c = chunks[i]
            rec = done.get(c.chunk_id)
            if rec is None or rec.get("content_hash") != c.content_hash:
                t = time.perf_counter()
                reply = complete(llm, question_messages(c), max_tokens=90, temperature=0.0)
                llm_seconds += time.perf_counter() - t
                rec = {"chunk_id": c.chunk_id, "content_hash": c.content_hash, "llm": llm.name,
                       "prompt_version": PROMPT_VERSION, "questions": parse_questions(reply)}
                part_f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                part_f.flush()
                done[c.chunk_id] = rec
            bar.set_postfix(kept=stats["kept"])
            stats["questions_written"] += len(rec["questions"])
    rows = []
    for i in order:
        c = chunks[i]
        for q in done[c.chunk_id]["questions"]:
            d, why = dev.closest(q)
            if d is not None:
                stats["dropped_dev"] += 1
                stats["dev_drops"].append({"question": q, "dev": d, "why": why})
                continue
            hits, _ = searcher.search(q, mode="hybrid", top_k=HYBRID_DEPTH)
            ids = [h.chunk_id for h in hits]
            if c.chunk_id not in ids:
                stats["dropped_not_in_top20"] += 1
                continue
            negs, left_out = picker.pick(q, i, ids)
            for k, v in left_out.items():
                stats["negatives_left_out"][k] = stats["negatives_left_out"].get(k, 0) + v
            if not negs:
                continue
            rows.append({"query": q, **_ref(c), "hybrid_rank": ids.index(c.chunk_id) + 1,
                         "negatives": [_ref(chunks[j]) for j in negs]})
            stats["kept"] += 1
    meta = {
        "llm": llm.name, "prompt_version": PROMPT_VERSION, "system_prompt": SYSTEM, "seed": settings.reranker_seed,
        "chunks_asked": len(order), "chunks_in_index": len(chunks), "index_version": version.vid,
        "hybrid_depth": HYBRID_DEPTH, "max_negatives": MAX_NEGATIVES,
        "filters": {"near_copy_cos": NEAR_COPY_COS, "dev_cos": DEV_COS, "topic_idf": TOPIC_IDF,
                    "heading_jaccard": HEADING_JACCARD},
        "stats": stats,
        "chunks_skipped_as_covered": len(skip),
        "seconds": {"llm_this_run": round(llm_seconds, 1), "total_this_run": round(time.perf_counter() - t_start, 1)},
        "command": command,
    }
    data_file, meta_file = data_paths(out)
    write_atomic(data_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_atomic(meta_file, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return rows, meta


def read_training_data(path: Path = DATA_FILE) -> list[dict]:
    """The rows of a training-data file; a missing file says which command writes it."""
    if not Path(path).is_file():
        raise DataError(f"No reranker training data at {path}. Write it with `guides train-reranker --write-data` "
                        f"(the bundled 1.5B LLM writes the questions; about an hour on 2 busy cores).")
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def resolve_rows(rows: Iterable[dict], chunks: Sequence[Chunk]) -> tuple[list[tuple[str, int, list[int]]], int]:
    """(query, positive index, negative indices) for each row whose chunks are in the index unchanged,
    and how many rows were skipped because a chunk changed or disappeared."""
    by_id = {c.chunk_id: (i, c.content_hash) for i, c in enumerate(chunks)}

    def idx(ref: dict) -> int | None:
        got = by_id.get(ref["chunk_id"])
        return got[0] if got and got[1] == ref["content_hash"] else None

    out, skipped = [], 0
    for r in rows:
        pos = idx(r)
        negs = [j for j in (idx(n) for n in r["negatives"]) if j is not None]
        if pos is None or not negs:
            skipped += 1
            continue
        out.append((r["query"], pos, negs))
    return out, skipped
