"""A tiny real index (two guides, the hash embedder, embedded Qdrant) for the reranker tests."""

from __future__ import annotations

import pytest

TINY_GUIDES = {
    "a.md": "# Guide A\n\n## Attention\n\n### Q1: Why scale dot products by sqrt(d_k)?\n\n"
            "**Answer:** Large dot products push the softmax into regions with tiny gradients, so the scores "
            "are divided by the square root of the key dimension before the softmax is taken over them.\n\n"
            "## Fine-tuning\n\n### Q2: What is LoRA?\n\n**Answer:** LoRA freezes the pre-trained weights and trains "
            "two small low-rank matrices whose product is added to a weight matrix, which cuts trainable parameters.\n",
    "b.md": "# Guide B\n\n## Retrieval\n\n**Q1: What does a reranker do in RAG?**\n\n**Expected Answer:**\n"
            "- A cross-encoder reads the question and each retrieved passage together and re-orders the top "
            "candidates of a fast first-stage search, which is slower but more precise than the first stage.\n\n"
            "## Serving\n\n- **Continuous batching**: new requests join the running batch at every decoding step, "
            "so the GPU stays busy and short requests do not wait for long ones to finish.\n",
}


@pytest.fixture
def tiny_index(tmp_path):
    """Settings whose index holds the two tiny guides (hash embedder, no model download)."""
    from core.settings import Settings
    from ingest.pipeline import run_ingest

    guides = tmp_path / "guides"
    guides.mkdir()
    for name, text in TINY_GUIDES.items():
        (guides / name).write_text(text)
    s = Settings(data_dir=tmp_path / "data", guides_dir=guides, embed_model="fake:hash")
    run_ingest(s, progress=False)
    return s
