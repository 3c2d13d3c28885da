"""Training the ``trained`` reranker, one job per module.

- ``bank``: the guides' own questions (the practice bank) paired with the chunks holding their answers,
  dev-set decontamination, hard negatives from the real hybrid search; `guides train-reranker --write-data bank`.
- ``data``: questions an LLM writes for chunks (same decontamination and negatives, plus InPars' filter);
  `guides train-reranker --write-data llm` (the 1.5B) or `llm-small` (the 0.5B, for the other chunks).
- ``fit``: fine-tuning the cross-encoder on them with sentence-transformers' ``CrossEncoderTrainer``
  and saving it atomically where ``retrieval.trained`` says it lives; `guides train-reranker`.
- ``tune``: choosing K, fusion and weight on the tune part (grid, cross-validation), the default rule;
  `guides train-reranker --measure tune|test`.

Inference lives with the other reranker backends in ``retrieval.rerank``.
"""
