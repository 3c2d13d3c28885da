"""Judges for ragas' LLM metrics: any OpenAI-compatible endpoint with JSON-schema-constrained output.

ragas asks its judge for pydantic models. Small local models rarely write valid JSON on their own,
so the judge sends the model's JSON schema as ``response_format`` (llama.cpp's server turns it into
a grammar; OpenAI and vLLM support it too) and validates the reply. A reply that still does not
validate raises: ragas records NaN for that sample, and the report counts the NaNs.

Example::

    judge = load_judge(settings, pipeline)      # 'bundled' reuses the answering model's local server
    print(judge.name)
"""

from __future__ import annotations

import asyncio

import os
import typing as t

from pydantic import BaseModel
from ragas.embeddings import BaseRagasEmbedding
from ragas.llms import InstructorBaseRagasLLM


class JudgeError(RuntimeError):
    pass


class SchemaJudge(InstructorBaseRagasLLM):
    def __init__(self, *, base_url: str | None, model: str, api_key: str | None, name: str, max_tokens: int = 768):
        from openai import OpenAI

        self.name = name
        self.model = model
        self.max_tokens = max_tokens
        self._sync = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=300, max_retries=0)
        self.calls = 0
        self.invalid = 0

    def _request(self, prompt: str, response_model: type[BaseModel]) -> dict:
        schema = response_model.model_json_schema()
        return dict(
            model=self.model,
            messages=[{"role": "system", "content": "Reply with one JSON object that follows the schema."},
                      {"role": "user", "content": prompt}],
            temperature=0.0,
            max_tokens=self.max_tokens,
            response_format={"type": "json_schema",
                             "json_schema": {"name": response_model.__name__, "schema": schema, "strict": True}},
        )

    def _parse(self, text: str, response_model):
        self.calls += 1
        try:
            return response_model.model_validate_json(text)
        except Exception as e:  # noqa: BLE001
            self.invalid += 1
            raise JudgeError(f"judge {self.name} returned invalid JSON for {response_model.__name__}: {e}") from e

    def generate(self, prompt, response_model):
        r = self._sync.chat.completions.create(**self._request(prompt, response_model))
        return self._parse(r.choices[0].message.content or "", response_model)

    async def agenerate(self, prompt, response_model):
        # The sync client in a worker thread, not AsyncOpenAI: ragas is driven by one asyncio.run per answer,
        # and an async client's pooled connections belong to the loop that opened them, so every later
        # loop failed with "Connection error" (63 of 192 judgements in the first full run).
        return await asyncio.to_thread(self.generate, prompt, response_model)


class FakeJudge(InstructorBaseRagasLLM):
    """Deterministic judge for tests: fills every field of the requested model from the prompt.

    Strings get the first sentence of the answer-like text in the prompt, numbers 1, lists one item:
    so Faithfulness sees one statement with verdict 1 and scores 1.0.
    """

    name = "fake (deterministic, for tests)"

    def __init__(self):
        self.calls = 0
        self.invalid = 0

    def _fill(self, ann, prompt: str):
        origin = t.get_origin(ann)
        if origin in (list, t.List):
            return [self._fill(t.get_args(ann)[0], prompt)]
        if origin is t.Union or str(origin) == "types.UnionType":
            return self._fill(next(a for a in t.get_args(ann) if a is not type(None)), prompt)
        if origin is t.Literal:
            return t.get_args(ann)[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann(**{k: self._fill(f.annotation, prompt) for k, f in ann.model_fields.items()})
        if ann is bool:
            return True
        if ann in (int, float):
            return ann(1)
        return prompt.strip().split("\n")[-1][:80] or "x"

    def generate(self, prompt, response_model):
        self.calls += 1
        return self._fill(response_model, prompt)

    async def agenerate(self, prompt, response_model):
        return self.generate(prompt, response_model)


class EmbedderAdapter(BaseRagasEmbedding):
    """The project's embedder as a ragas embedding (no second model load)."""

    def __init__(self, embedder):
        self.embedder = embedder

    def embed_text(self, text: str, **kw) -> list[float]:
        return self.embedder.embed([text])[0].tolist()

    async def aembed_text(self, text: str, **kw) -> list[float]:
        return self.embed_text(text)

    def embed_texts(self, texts, **kw):
        return self.embedder.embed(list(texts)).tolist()


def load_judge(settings, pipeline=None):
    """The ragas judge ``settings.judge`` names; None for 'off' (LLM-judged ragas metrics skipped)."""
    name = settings.judge
    if name == "off":
        return None
    if name == "fake":
        return FakeJudge()
    if name == "bundled":
        if settings.llm != "bundled" or pipeline is None:
            from core.llm import load_llm
            from core.settings import Settings

            llm = load_llm(settings.model_copy(update={"llm": "bundled"}) if isinstance(settings, Settings) else settings)
        else:
            llm = pipeline.llm
        base = llm.address.rstrip("/") + "/v1"
        return SchemaJudge(base_url=base, model=llm.name, api_key=None, name=f"{llm.name} (local, JSON-schema constrained)")
    if name == "openai":
        if not settings.judge_base_url and not os.environ.get(settings.judge_api_key_env):
            raise JudgeError(f"GUIDES_JUDGE=openai needs GUIDES_JUDGE_BASE_URL or the key in {settings.judge_api_key_env}.")
        if not settings.judge_model:
            raise JudgeError("GUIDES_JUDGE=openai needs GUIDES_JUDGE_MODEL (e.g. gpt-4o-mini).")
        return SchemaJudge(base_url=settings.judge_base_url, model=settings.judge_model,
                           api_key=os.environ.get(settings.judge_api_key_env), name=f"{settings.judge_model} @ {settings.judge_base_url or 'OpenAI'}")
    raise JudgeError(f"Unknown judge {name!r} (GUIDES_JUDGE). Supported judges are: ['bundled', 'openai', 'off', 'fake']")
