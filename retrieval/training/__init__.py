"""Training the ``trained`` reranker, one job per module.

- ``data``: the training questions (the LLM writes them, dev-set decontamination, hard negatives
  from the real hybrid search); `guides train-reranker --write-data`.
- ``fit``: fine-tuning the cross-encoder on them with sentence-transformers' ``CrossEncoderTrainer``
  and saving it atomically where ``retrieval.trained`` says it lives; `guides train-reranker`.

Inference lives with the other reranker backends in ``retrieval.rerank``.
"""
