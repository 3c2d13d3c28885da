"""The guides index for llama-index users: a retriever, two query engines and an LLM adapter.

- ``GuidesRetriever``: a llama-index ``BaseRetriever`` over the product's own retrieval path
  (``Pipeline.retrieve``: follow-up rewrite, hybrid search, rerank when configured). Each
  ``NodeWithScore`` holds a ``TextNode`` whose id is the chunk id and whose metadata names the
  guide, its title, the section and the line range (plus rank and per-stage scores).
- ``retriever_query_engine``: llama-index's own ``RetrieverQueryEngine`` over that retriever,
  answering with any llama-index LLM (by default the project's LLM through ``GuidesLLM``).
- ``GuidesQueryEngine``: answers through the product's answerer (refusal gate, citations
  verified against the passages), as a llama-index ``Response`` with ``source_nodes``.
- ``GuidesLLM``: the project's LLM (``core.llm``: bundled llama.cpp, OpenAI-compatible, or the
  deterministic fake) as a llama-index ``CustomLLM``.

Example::

    from core.settings import load_settings
    from pipeline.qa import Pipeline
    from pipeline.llama_index import GuidesQueryEngine, GuidesRetriever, retriever_query_engine

    pipe = Pipeline(load_settings())
    for n in GuidesRetriever(pipe, top_k=3).retrieve("What is LoRA?"):
        print(n.score, n.node.metadata["section"], n.node.metadata["lines"])
    print(retriever_query_engine(pipe).query("What is LoRA?"))      # llama-index's synthesizer
    print(GuidesQueryEngine(pipeline=pipe).query("What is LoRA?"))  # the product's cited answer
"""

from __future__ import annotations

from typing import Any, Sequence

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.base.response.schema import Response
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.query_engine import CustomQueryEngine, RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from core.llm import LLM, Message
from core.types import Hit
from pipeline.qa import Pipeline
from retrieval.search import MODES

# Metadata a node carries for the caller but that is not worth the LLM's or an embedder's tokens.
_NOT_FOR_MODELS = ["chunk_id", "guide", "guide_title", "lines", "rank", "scores"]   # the section names the guide


def hit_to_node(hit: Hit) -> NodeWithScore:
    """One ranked passage as a llama-index node: id = chunk id, text = the chunk text, score = the hit's score."""
    p = hit.payload
    node = TextNode(
        id_=p["chunk_id"],
        text=p["text"],
        metadata={"guide": p["guide"], "guide_title": p["guide_title"], "section": p["section"],
                  "lines": [int(p["lines"][0]), int(p["lines"][1])], "chunk_id": p["chunk_id"],
                  "rank": hit.rank, "scores": {k: (float(v) if isinstance(v, float) else v) for k, v in hit.scores.items()}},
        excluded_llm_metadata_keys=list(_NOT_FOR_MODELS),
        excluded_embed_metadata_keys=list(_NOT_FOR_MODELS),
    )
    return NodeWithScore(node=node, score=float(hit.score))


class GuidesRetriever(BaseRetriever):
    """The product's retrieval (rewrite, hybrid search, rerank) as a llama-index retriever.

    ``history``: earlier questions of a conversation, so a follow-up ("and its drawbacks?") is
    rewritten into a standalone query exactly as the app does. ``top_k=None`` means the settings'
    ``top_k``; ``mode``: ``hybrid`` (the configured pipeline, reranked when a reranker is set),
    ``bm25`` or ``dense``.
    """

    def __init__(self, pipeline: Pipeline, *, top_k: int | None = None, mode: str = "hybrid",
                 history: Sequence[str] = (), **kwargs: Any):
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode {mode!r}. Supported modes are: {list(MODES)}")
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.top_k = top_k
        self.mode = mode
        self.history = list(history)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        res = self.pipeline.retrieve([*self.history, query_bundle.query_str], mode=self.mode, top_k=self.top_k)
        return [hit_to_node(h) for h in res.hits]


class GuidesLLM(CustomLLM):
    """A project LLM (``core.llm.LLM``) as a llama-index LLM; chat messages pass through unchanged.

    ``GuidesLLM(pipeline.llm)`` or ``GuidesLLM(FakeLLM())``; ``max_tokens`` caps each reply.
    """

    max_tokens: int = Field(default=512, gt=0, description="Most tokens one reply may have.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    _llm: Any = PrivateAttr()

    def __init__(self, llm: LLM, **kwargs: Any):
        if not isinstance(llm, LLM):
            raise TypeError(f"GuidesLLM wraps a core.llm.LLM (stream, count_tokens, name, context_window); "
                            f"got {type(llm).__name__}. Build one with core.llm.load_llm(settings).")
        super().__init__(**kwargs)
        self._llm = llm

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self._llm.context_window, num_output=self.max_tokens,
                           is_chat_model=True, model_name=self._llm.name)

    def _stream(self, messages: list[Message], stop: Sequence[str] | None) -> Any:
        return self._llm.stream(messages, max_tokens=self.max_tokens, temperature=self.temperature, stop=stop)

    @staticmethod
    def _messages(messages: Sequence[ChatMessage]) -> list[Message]:
        roles = {MessageRole.SYSTEM: "system", MessageRole.USER: "user", MessageRole.ASSISTANT: "assistant"}
        out = []
        for m in messages:
            if m.role not in roles:
                raise ValueError(f"GuidesLLM takes system, user and assistant messages; got a {m.role.value!r} message.")
            out.append({"role": roles[m.role], "content": m.content or ""})
        return out

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="".join(self._stream([{"role": "user", "content": prompt}], kwargs.get("stop"))))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        pieces = self._stream([{"role": "user", "content": prompt}], kwargs.get("stop"))

        def gen() -> CompletionResponseGen:
            text = ""
            for piece in pieces:
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = "".join(self._stream(self._messages(messages), kwargs.get("stop")))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        pieces = self._stream(self._messages(messages), kwargs.get("stop"))

        def gen() -> ChatResponseGen:
            text = ""
            for piece in pieces:
                text += piece
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece)

        return gen()


def retriever_query_engine(pipeline: Pipeline, *, llm=None, top_k: int | None = None, **kwargs: Any) -> RetrieverQueryEngine:
    """llama-index's ``RetrieverQueryEngine`` over ``GuidesRetriever``; ``llm`` defaults to the pipeline's
    own LLM (``GuidesLLM(pipeline.llm)``). Extra keyword arguments go to ``RetrieverQueryEngine.from_args``."""
    return RetrieverQueryEngine.from_args(GuidesRetriever(pipeline, top_k=top_k),
                                          llm=llm if llm is not None else GuidesLLM(pipeline.llm), **kwargs)


class GuidesQueryEngine(CustomQueryEngine):
    """Answers through the product's answerer (``Pipeline.ask``): refusal gate, passages, verified citations.

    The ``Response`` text is the answer the CLI and app show; ``source_nodes`` are the passages the
    model saw, in prompt order (a citation ``[n]`` is ``source_nodes[n-1]``); ``metadata`` holds
    the citations, the refusal, the verification status and the search query.
    """

    pipeline: Pipeline = Field(description="The guides pipeline to answer with.")
    history: list[str] = Field(default_factory=list, description="Earlier questions of the conversation.")

    def custom_query(self, query_str: str) -> Response:
        res = self.pipeline.ask([*self.history, query_str])
        a = res.answer
        nodes = []
        for p in a.passages:
            n = hit_to_node(p.hit)
            n.node.metadata["n"] = p.n
            n.node.excluded_llm_metadata_keys.append("n")
            nodes.append(n)
        meta = {"citations": [c.to_json() for c in a.citations], "refused": a.refused,
                "refusal_reason": a.refusal_reason, "status": a.status, "left_out": a.left_out,
                "search_query": res.search_query,
                "timings_ms": dict(res.timings_ms)}
        return Response(response=a.answer, source_nodes=nodes, metadata=meta)
