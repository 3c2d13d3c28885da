"""The question-answering pipeline: retrieval + answering behind one object.

Layer: above ``answer/``, ``retrieval/`` and ``practice/``; below ``eval/`` (which answers
through it, and through its llama-index adapter for the peer) and ``guides_qa/`` (CLI, app, API).
"""
from pipeline.qa import Pipeline

__all__ = ["Pipeline"]
