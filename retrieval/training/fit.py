"""`guides train-reranker`: fine-tune a cross-encoder from the bundled MiniLM with sentence-transformers.

The training questions come from ``retrieval/data/reranker_train.jsonl`` (written once by
``guides train-reranker --write-data``, see retrieval/training/data.py); each names its chunk and
its hard negatives by chunk id, resolved here against the current index.

The model is a sentence-transformers ``CrossEncoder`` built from modules: the MiniLM encoder
over ``query [SEP] heading path + chunk text``, mean pooling, and a linear layer to one score.
The stock ``CrossEncoder(minilm, num_labels=1)`` puts a new classifier on the BERT [CLS] pooler,
which this checkpoint never trained (it was trained with mean pooling); that one learned nothing
(docs/offline-stack.md). Training is ``CrossEncoderTrainer`` with ``MultipleNegativesRankingLoss``:
a softmax over the raw scores of the positive, the question's hard negatives and one in-batch negative. The head
learns at ``HEAD_LR``, the encoder at the recipe's learning rate (recipe and key: retrieval/trained.py).

The folder ``<data_dir>/models/reranker-<key>/`` (written to a temporary folder, then renamed) is
an ordinary CrossEncoder folder plus ``reranker.json`` (marks it complete) and ``metadata.json``;
the key hashes the indexed chunks, the training data file, the recipe and the seed.

Example::

    path = train_reranker(load_settings())         # a few minutes on 2 cores
    json.loads((path / "metadata.json").read_text())["heldout"]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from core.settings import Settings
from core.types import Chunk

from ..trained import (BASE_MODEL, TRAINED_FORMAT, corpus_fingerprint, file_sha, format_passage,
                       model_dir, recipe, training_files)
from .data import read_training_data, resolve_rows


class TrainingError(RuntimeError):
    """Reranker training cannot run; the message says how to fix it."""


# --------------------------------------------------------------------------- model


def build_cross_encoder(max_length: int, seed: int, layers: int | None = None):
    """A CrossEncoder from the bundled MiniLM: encoder (its first ``layers`` transformer layers; None: all 6),
    mean pooling, linear layer (one score, no activation). Fewer layers: proportionally faster to score."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from ingest.embed import resolve_model_path

    torch.manual_seed(seed)
    encoder = Transformer(str(resolve_model_path(BASE_MODEL)), transformer_task="feature-extraction",
                          max_seq_length=max_length)
    if layers is not None:
        keep_layers(encoder.auto_model, layers)
    dim = encoder.get_embedding_dimension() if hasattr(encoder, "get_embedding_dimension") else 384
    head = Dense(dim, 1, activation_function=None, module_output_name="scores")
    return CrossEncoder(modules=[encoder, Pooling(dim, pooling_mode="mean"), head], device="cpu",
                        activation_fn=torch.nn.Identity())


def keep_layers(bert, n: int) -> None:
    """Keep the first ``n`` transformer layers of a BERT model (its config says so too, so it saves and loads)."""
    have = len(bert.encoder.layer)
    if not 1 <= n <= have:
        raise TrainingError(f"GUIDES_RERANKER_LAYERS={n}, but the base model has {have} layers; use 1 to {have}.")
    bert.encoder.layer = bert.encoder.layer[:n]
    bert.config.num_hidden_layers = n


# --------------------------------------------------------------------------- data


def split_heldout(examples: list[tuple[str, int, list[int]]], chunks: Sequence[Chunk], share: float,
                  seed: int) -> tuple[list, list]:
    """(train, held-out) by positive chunk, so no chunk's questions are on both sides."""
    def held(pos: int) -> bool:
        h = hashlib.sha256(f"{seed}:heldout:{chunks[pos].chunk_id}".encode()).hexdigest()
        return int(h[:8], 16) / 0xFFFFFFFF < share

    train = [e for e in examples if not held(e[1])]
    return train, [e for e in examples if held(e[1])]


def to_columns(examples, chunks: Sequence[Chunk], n_neg: int) -> dict[str, list[str]]:
    """``query, positive, negative_1..n`` columns (the first ``n_neg`` hard negatives, in hybrid order);
    questions with fewer hard negatives are left out."""
    passage = [format_passage(c.section_path, c.text) for c in chunks]
    cols: dict[str, list[str]] = {"query": [], "positive": [], **{f"negative_{k + 1}": [] for k in range(n_neg)}}
    for q, pos, negs in examples:
        if len(negs) < n_neg:
            continue
        cols["query"].append(q)
        cols["positive"].append(passage[pos])
        for k in range(n_neg):
            cols[f"negative_{k + 1}"].append(passage[negs[k]])
    return cols


def heldout_accuracy(model, examples, chunks: Sequence[Chunk]) -> float:
    """Share of held-out questions whose own chunk the model scores above all its hard negatives."""
    if not examples:
        return float("nan")
    passage = [format_passage(c.section_path, c.text) for c in chunks]
    hits = 0
    for q, pos, negs in examples:
        s = model.predict([(q, passage[i]) for i in [pos, *negs]], show_progress_bar=False)
        hits += int(np.argmax(s) == 0)
    return hits / len(examples)


# --------------------------------------------------------------------------- training


def read_sources(files: Sequence[Path], chunks: Sequence[Chunk]) -> tuple[list, int, dict[str, dict[str, int]]]:
    """(query, positive, negatives) of every file's rows whose chunks are in the index unchanged, how many
    rows were skipped as stale, and per file name its rows and usable rows."""
    examples, skipped, per_file = [], 0, {}
    for f in files:
        rows = read_training_data(f)
        got, stale = resolve_rows(rows, chunks)
        examples += got
        skipped += stale
        per_file[Path(f).name] = {"rows": len(rows), "usable": len(got)}
    return examples, skipped, per_file


def train_reranker(settings: Settings, *, progress: bool = True, tiny: bool = False,
                   data: Path | Sequence[Path] | None = None) -> Path:
    """Train the cross-encoder for the current index from ``data`` (default: the files of
    ``settings.reranker_data_sources``); returns its folder (see the module docstring).

    ``tiny`` trains one short epoch (for tests); it is saved under its own key, so it never stands in
    for the real model.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    from ingest.store import IndexLayout

    t_start, cpu_start = time.perf_counter(), time.process_time()
    r = recipe(settings, tiny=tiny)
    version = IndexLayout(settings).require_current()
    chunks = version.chunks()
    final = model_dir(settings, chunks, tiny=tiny, data=data)
    key = final.name.removeprefix("reranker-")

    files = training_files(settings, data)
    names = [str(f) for f in files]
    examples, skipped, per_file = read_sources(files, chunks)
    if not examples:
        raise TrainingError(f"None of the {skipped} questions in {names} matches a chunk of the current index "
                            f"unchanged (their chunks changed or are gone). Regenerate the data for this index: "
                            f"`guides train-reranker --write-data bank` (and llm, llm-small).")
    train, heldout = split_heldout(examples, chunks, r["heldout_share"], r["seed"])
    cols = to_columns(train, chunks, r["hard_negatives"])
    if not cols["query"]:
        raise TrainingError(f"No training question in {names} has {r['hard_negatives']} hard negatives; lower "
                            f"GUIDES_RERANKER_HARD_NEGATIVES or regenerate the data "
                            f"(`guides train-reranker --write-data bank`).")

    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.reranker_train_threads)
    tmp_root = Path(tempfile.mkdtemp(prefix=".train-", dir=_ensure(final.parent)))
    try:
        model = build_cross_encoder(r["max_length"], r["seed"], r["layers"])
        loss = MultipleNegativesRankingLoss(model, num_negatives=r["in_batch_negatives"], scale=r["scale"],
                                            activation_fn=None)
        args = CrossEncoderTrainingArguments(
            output_dir=str(tmp_root / "trainer"), num_train_epochs=r["epochs"],
            per_device_train_batch_size=r["batch_size"], learning_rate=r["lr_encoder"],
            learning_rate_mapping={r"\b2\.linear\.": r["lr_head"]},                 # the Dense head (module 2)
            warmup_steps=r["warmup_ratio"], weight_decay=0.01, seed=r["seed"], data_seed=r["seed"],
            batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", report_to="none",
            logging_steps=10, disable_tqdm=not progress, use_cpu=True, dataloader_num_workers=0)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(cols), loss=loss)
        t = time.perf_counter()
        out = trainer.train()
        train_s = time.perf_counter() - t
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        t = time.perf_counter()
        acc = heldout_accuracy(model, heldout, chunks)
        heldout_s = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads_before)

    try:
        meta = {
            "key": key, "index_version": version.vid, "corpus_fingerprint": corpus_fingerprint(chunks),
            "n_chunks": len(chunks), "recipe": r, "data": {"files": {str(f): file_sha(f) for f in files},
                                                          "per_file": per_file, "skipped_stale": skipped,
                                                          "train_questions": len(cols["query"]),
                                                          "heldout_questions": len(heldout)},
            "steps": int(out.global_step), "loss": {"first": losses[0] if losses else None,
                                                    "last": losses[-1] if losses else None, "log": losses},
            "heldout": {"top1_accuracy": acc,
                        "chance": float(np.mean([1 / (1 + len(n)) for _, _, n in heldout])) if heldout else None,
                        "note": "own chunk scored above all of its hard negatives (up to 7)"},
            "seconds": {"train": round(train_s, 1), "heldout": round(heldout_s, 1),
                        "total": round(time.perf_counter() - t_start, 1)},
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
            "torch_threads": settings.reranker_train_threads,
        }
        _save(model, tmp_root / "model", final, meta, {"format": TRAINED_FORMAT, "key": key,
                                                       "max_length": r["max_length"], "base_model": BASE_MODEL})
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _save(model, tmp: Path, final: Path, meta: dict, info: dict) -> None:
    """Save the CrossEncoder into ``tmp`` (beside ``final``), then rename it into place."""
    model.save(str(tmp))
    _write_json(tmp / "metadata.json", meta)
    _write_json(tmp / "reranker.json", info)          # written last: its presence marks a complete model
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
