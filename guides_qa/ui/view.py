"""What the chat app shows, as plain data built from pipeline results; no Streamlit here.

``turn_from_result`` turns an ``AskResult`` into a ``TurnView`` (answer, citations with the
supporting spans, the sources table, timings) that the session keeps and the renderer draws;
``error_turn`` does the same for a failed question, with a message that names the setting or
command that fixes it.

Example::

    turn = turn_from_result(result, question="What is LoRA?", options={"top_k": 10})
    turn.citations[0].leaf           # 'Q18: Explain LoRA (Low-Rank Adaptation).'
    turn.citations[0].lines          # (98, 98)
    highlight("LoRA is small. It merges.", [(0, 14)])   # '<mark>LoRA is small.</mark> It merges.'
"""

from __future__ import annotations

import html
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Sequence

from core.text import line_range

# Stages of the latency line, in the order a question passes them.
LATENCY_STAGES = (("rewrite", "rewrite"), ("retrieve", "retrieve"), ("rerank", "rerank"), ("gate", "refusal check"),
                  ("first_token", "first token"), ("generate", "generate"), ("total", "total"))
_MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass
class Support:
    """One answer sentence that cites the passage, and the passage span that supports it."""
    sentence: str
    span: str
    start: int
    end: int
    score: float
    verified: bool
    status: str = "unverified"                                 # verified | unverified | contradicted | too_short
    reasons: list[str] = field(default_factory=list)          # why it is not verified ("the passage says NF4")


@dataclass
class CitationView:
    n: int
    chunk_id: str
    guide: str
    guide_title: str
    section: str                 # full path, starting with the guide title
    section_path: list[str]      # headings below the guide title
    lines: tuple[int, int]
    text: str                    # the passage as indexed
    verified: bool
    supports: list[Support] = field(default_factory=list)

    @property
    def leaf(self) -> str:
        return self.section_path[-1] if self.section_path else (self.section or self.guide_title)

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in self.supports]


@dataclass
class SourceRow:
    """One retrieved passage in the retrieval playground."""
    rank: int                    # after reranking (== before when reranking is off)
    rank_before: int             # fused rank, before reranking
    fused: float | None
    ce: float | None
    rerank: float | None
    prompt_n: int | None         # [n] when the LLM saw it
    cited: bool
    guide: str
    section: str                 # heading path below the guide title
    lines: str
    preview: str
    chunk_id: str

    def as_row(self) -> dict:
        used = f"[{self.prompt_n}]{' ✓' if self.cited else ''}" if self.prompt_n else ""
        return {"rank": self.rank, "fused rank": self.rank_before, "fused": self.fused, "rerank": self.rerank,
                "reranker": self.ce, "prompt": used, "section": self.section, "lines": self.lines,
                "passage": self.preview, "guide": self.guide}


@dataclass
class ErrorView:
    kind: str                    # "index", "llm", "reranker", "input", "embedder", "other"
    title: str
    detail: str
    hint: str = ""


@dataclass
class TurnView:
    """One question and what came back; kept per browser session in st.session_state."""
    id: str
    question: str
    created: str
    answer: str = ""
    refused: bool = False
    refusal_reason: str | None = None
    rewritten_query: str | None = None
    search_query: str | None = None
    citations: list[CitationView] = field(default_factory=list)
    sources: list[SourceRow] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)     # the effective settings (no secrets), for feedback
    turns: list[str] = field(default_factory=list)
    error: ErrorView | None = None
    partial: str = ""            # text streamed before an error
    status: str = ""             # the answer's trust state: verified | incomplete | unverified | contradicted | too_short | refused
    evidence: list[dict] = field(default_factory=list)   # the guides' sentences each cited sentence aligned with
    left_out: list[dict] = field(default_factory=list)   # best evidence an incomplete answer leaves out
    missing_parts: list[str] = field(default_factory=list)   # the parts of the question an incomplete answer leaves out

    @property
    def ok(self) -> bool:
        return self.error is None

    def citations_json(self) -> list[dict]:
        return [{"n": c.n, "chunk_id": c.chunk_id, "guide": c.guide, "section": c.section, "lines": list(c.lines),
                 "verified": c.verified, "supports": [asdict(s) for s in c.supports]} for c in self.citations]


def new_turn_id() -> str:
    return uuid.uuid4().hex


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def shorten(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


# --------------------------------------------------------------------------- building views
def turn_from_result(result, *, question: str, settings=None, options: dict | None = None,
                     turn_id: str | None = None) -> TurnView:
    """The view of one answered (or refused) question from a ``pipeline.qa.AskResult``."""
    a = result.answer
    by_n = {p.n: p.hit for p in a.passages}
    cites = []
    for c in a.citations:
        hit = by_n.get(c.n)
        if hit is None:           # the answerer only cites passages it showed the LLM
            continue
        p = hit.payload
        cites.append(CitationView(
            n=c.n, chunk_id=c.chunk_id, guide=p.get("guide", ""), guide_title=p.get("guide_title", ""),
            section=p.get("section", ""), section_path=list(p.get("section_path") or []),
            lines=(int(p["lines"][0]), int(p["lines"][1])), text=p.get("text", ""), verified=c.verified,
            supports=[Support(sentence=s.sentence, span=s.span, start=s.span_start, end=s.span_end,
                              score=float(s.score), verified=s.verified, status=s.status,
                              reasons=list(s.reasons)) for s in c.supports]))
    return TurnView(
        id=turn_id or new_turn_id(), question=question, created=_now(), answer=a.answer, refused=a.refused,
        refusal_reason=a.refusal_reason, rewritten_query=a.rewritten_query, search_query=result.search_query,
        citations=cites, sources=source_rows(result.hits, a.passages, {c.n for c in cites}),
        timings=dict(result.timings_ms), warnings=list(a.warnings), options=dict(options or {}),
        settings=settings_snapshot(settings) if settings is not None else {}, turns=list(result.turns),
        status=a.status, evidence=list(a.evidence), left_out=list(a.left_out),
        missing_parts=list(a.missing_parts))


def source_rows(hits: Sequence, passages: Sequence = (), cited_ns: set[int] = frozenset()) -> list[SourceRow]:
    """Every retrieved passage with its fused score, rerank scores and rank before/after reranking."""
    n_of = {p.hit.chunk_id: p.n for p in passages}
    rows = []
    for h in hits:
        p, s = h.payload, h.scores
        fused = s.get("hybrid", s.get("dense", s.get("bm25")))
        n = n_of.get(h.chunk_id)
        rows.append(SourceRow(
            rank=h.rank, rank_before=int(s.get("fused_rank", h.rank)),
            fused=None if fused is None else round(float(fused), 4),
            ce=None if s.get("ce") is None else round(float(s["ce"]), 4),
            rerank=None if s.get("rerank") is None else round(float(s["rerank"]), 4),
            prompt_n=n, cited=n is not None and n in cited_ns, guide=p.get("guide", ""),
            section=" › ".join(p.get("section_path") or []) or p.get("section", ""),
            lines=line_range(p["lines"]).split(" ", 1)[1],
            preview=shorten(p.get("text", ""), 160), chunk_id=h.chunk_id))
    return rows


def error_turn(question: str, exc: BaseException, settings, *, options: dict | None = None,
               turns: Sequence[str] = (), partial: str = "", turn_id: str | None = None) -> TurnView:
    """The view of a question that failed; ``settings`` are the ones in force for it (named in the hint)."""
    return TurnView(id=turn_id or new_turn_id(), question=question, created=_now(), options=dict(options or {}),
                    settings=settings_snapshot(settings), turns=list(turns), error=describe_error(exc, settings),
                    partial=partial)


def describe_error(exc: BaseException, settings) -> ErrorView:
    """Classify a failure of one question and say which setting or command fixes it."""
    from pipeline.qa import InputError
    from ingest.store import IndexError_, IndexMissingError

    msg = str(exc) or type(exc).__name__
    if isinstance(exc, InterruptedError):
        return ErrorView("interrupted", "Interrupted", msg, "Ask again.")
    if isinstance(exc, InputError):
        return ErrorView("input", "This question cannot be asked", msg)
    if isinstance(exc, IndexMissingError):
        return ErrorView("index", "No index to search", msg,
                         "Run `guides ingest` (or `make run`), or use **Re-index guides** in the sidebar.")
    if isinstance(exc, IndexError_):
        return ErrorView("index", "The index cannot be used", msg,
                         "Run `guides ingest` (or **Re-index guides** in the sidebar).")
    if _is(exc, "core.llm", "LLMError") or _is(exc, "core.bundled", "BundledModelError"):
        return ErrorView("llm", "The language model could not answer", msg, llm_hint(settings))
    if _is(exc, "retrieval.rerank", "RerankerError"):
        return ErrorView("reranker", "The reranker could not be loaded", msg,
                         f"Check GUIDES_RERANKER (now {settings.reranker!r}), or switch **Rerank** off in the sidebar.")
    if _is(exc, "ingest.embed", "EmbedderError"):
        return ErrorView("embedder", "The embedding model could not be loaded", msg,
                         f"Check GUIDES_EMBED_MODEL (now {settings.embed_model!r}).")
    return ErrorView("other", f"Unexpected error ({type(exc).__name__})", msg,
                     "Your conversation is kept; try again or start a new conversation.")


def _is(exc: BaseException, module: str, name: str) -> bool:
    import sys

    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(exc, cls)


def llm_hint(settings) -> str:
    """Which settings decide the LLM backend, with their current values."""
    name = settings.llm
    if name == "openai":
        return (f"Check GUIDES_LLM_BASE_URL (now {settings.llm_base_url!r}), GUIDES_LLM_MODEL "
                f"(now {settings.llm_model!r}) and the API key variable GUIDES_LLM_API_KEY_ENV names "
                f"({settings.llm_api_key_env}); or pick another backend in the sidebar.")
    if name.startswith("gguf:") or name in ("bundled", "bundled-small"):
        return (f"Check GUIDES_LLM (now {name!r}): the GGUF file must exist and llama.cpp (xllamacpp) must be "
                f"installed (`make install`); or set GUIDES_LLM=openai with GUIDES_LLM_BASE_URL and GUIDES_LLM_MODEL.")
    return f"Check GUIDES_LLM (now {name!r}); supported: bundled, bundled-small, gguf:<path>, openai, fake."


# --------------------------------------------------------------------------- text for rendering
def highlight(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` HTML-escaped, with ``spans`` wrapped in <mark>, **bold** and `code` rendered, line breaks kept.

    Safe to pass to ``st.markdown(..., unsafe_allow_html=True)``: only the tags added here are live.
    The result is one line (newlines become ``&#10;``) so markdown treats it as a single HTML block.
    """
    merged: list[list[int]] = []
    for a, b in sorted((max(0, a), min(len(text), b)) for a, b in spans if b > a):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        elif a < b:
            merged.append([a, b])
    out, pos = [], 0
    for a, b in merged:
        out.append(_inline(text[pos:a]))
        out.append(f"<mark>{_inline(text[a:b])}</mark>")
        pos = b
    out.append(_inline(text[pos:]))
    return "".join(out).replace("\r", "").replace("\n", "&#10;")


def _inline(s: str) -> str:
    s = html.escape(s, quote=True)
    s = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"`([^`\n]+)`", r"<code>\1</code>", s)
    # Characters markdown, emoji shortcodes or LaTeX would still act on in the surrounding markdown pass.
    return s.replace("$", "&#36;").replace(":", "&#58;")


def passage_html(c: CitationView) -> str:
    return f'<div class="gq-passage">{highlight(c.text, c.spans)}</div>'


def escape_md(s: str) -> str:
    """Text shown verbatim inside Streamlit markdown (labels, captions)."""
    s = re.sub(r"([\\`*_\[\]<>#|~$])", r"\\\1", s)
    return s.replace(":", "\\:")


def answer_markdown(text: str) -> str:
    """The model's answer as markdown: citation markers [n] as badges, '$' not read as LaTeX."""
    text = text.replace("$", "\\$")
    return _MARKER.sub(lambda m: f":blue-badge[{m.group(1)}]", text)


def latency_parts(timings: dict) -> list[tuple[str, float]]:
    return [(label, float(timings[k])) for k, label in LATENCY_STAGES if k in timings]


def latency_line(timings: dict) -> str:
    """'rewrite 0 ms · retrieve 32 ms · … · total 73 ms' (no-break spaces inside each item)."""
    return " · ".join(f"{label}\u00a0{fmt_ms(ms)}".replace(" ", "\u00a0") for label, ms in latency_parts(timings))


def fmt_ms(ms: float) -> str:
    if ms >= 10_000:
        return f"{ms / 1000:.0f} s"
    if ms >= 1000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.0f} ms" if ms >= 1 else f"{ms:.1f} ms"


def loading_message(step: str | None, elapsed: float) -> str:
    """'Loading the models (reranker), 12 s so far…' for a question that waits for the start-up."""
    return f"Loading the models{f' ({step})' if step else ''}, {elapsed:.0f} s so far…"


def queue_message(ahead: int, waited: float) -> str:
    """What a question waiting for the one local model sees: its place in the queue and how long so far."""
    if ahead <= 0:
        return "Your question is next for the local model…"
    who = "1 question" if ahead == 1 else f"{ahead} questions"
    return (f"Queued for the local model: position {ahead + 1}, {who} ahead of yours "
            f"(one answer at a time), {waited:.0f} s so far…")


def turn_summary(turn: TurnView) -> str:
    """One log line for a question: outcome, citations, stage timings."""
    if not turn.ok:
        return f"error ({turn.error.title}): {turn.error.detail}"
    if turn.refused:
        outcome = f"refused ({turn.refusal_reason})"
    else:
        verified = sum(c.verified for c in turn.citations)
        outcome = f"answered, {len(turn.citations)} citation(s), {verified} verified"
    stages = ", ".join(f"{label} {fmt_ms(ms)}" for label, ms in latency_parts(turn.timings))
    return f"{outcome}; {stages}"


# --------------------------------------------------------------------------- sidebar data
@dataclass
class IndexStatus:
    ok: bool
    message: str = ""
    version: str | None = None
    created: str | None = None
    n_chunks: int = 0
    guides: list[dict] = field(default_factory=list)     # {"guide", "title", "chunks"}
    skipped: list[str] = field(default_factory=list)


def index_status(settings) -> IndexStatus:
    """The published index: its guides with chunk counts and when it was built, or what to run."""
    from ingest.store import IndexError_, IndexLayout

    try:
        v = IndexLayout(settings).require_current()
    except IndexError_ as e:
        return IndexStatus(ok=False, message=str(e))
    m = v.meta
    guides = [{"guide": rel, "title": g.get("title", rel), "chunks": int(g.get("chunks", 0))}
              for rel, g in sorted((m.get("guides") or {}).items())]
    return IndexStatus(ok=True, version=v.vid, created=m.get("created"), n_chunks=int(m.get("n_chunks", 0)),
                       guides=guides, skipped=list(m.get("skipped") or []))


def llm_choices(settings) -> list[str]:
    """LLM backends a session may pick: the configured one first, then the others usable with these settings."""
    out = [settings.llm]
    for name in ("bundled", "bundled-small"):
        if name not in out:
            out.append(name)
    if settings.llm_model and "openai" not in out:
        out.append("openai")
    return out


def settings_snapshot(settings) -> dict:
    """The settings that shaped an answer, without secrets (stored with feedback)."""
    d = settings.model_dump(mode="json")
    d.pop("qdrant_api_key", None)
    return d


# --------------------------------------------------------------------------- conversation
HISTORY_TURNS = 6


def conversation(history: Sequence[TurnView], question: str, *, max_history: int = HISTORY_TURNS) -> list[str]:
    """The turns the pipeline sees: this session's earlier answered questions (failed ones left out), then the new one."""
    prev = [t.question for t in history if t.ok][-max_history:] if max_history > 0 else []
    return prev + [question]
