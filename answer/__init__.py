"""The answering stage: LLM backends, prompt, citations, refusal, follow-up rewriting.

Example::

    from answer import Answerer, Token, load_llm
    answerer = Answerer(settings, llm=load_llm(settings), embedder=pipeline.embedder)
    result = answerer.answer("What is LoRA?", hits)
"""

from answer.answerer import Answerer, AnswerResult, Token
from core.llm import LLM, LLMError, load_llm

__all__ = ["Answerer", "AnswerResult", "Token", "LLM", "LLMError", "load_llm"]
