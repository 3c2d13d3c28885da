"""Judges for ragas' LLM metrics: the project's LLM client with JSON-schema-constrained output.

ragas asks its judge for pydantic models. Small local models rarely write valid JSON on their own,
so ``SchemaJudge`` wraps an OpenAI-compatible LLM from ``core.llm`` and calls its
``complete_json``, which sends the model's JSON schema as ``response_format`` (llama.cpp's server
turns it into a grammar; OpenAI and vLLM support it too); the judge validates the reply. A reply
that still does not validate raises: ragas records NaN for that sample, and the report counts the NaNs.

Example::

    judge = load_judge(settings, pipeline)      # 'bundled' reuses the answering model's local server
    print(judge.name)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import typing as t

from pydantic import BaseModel
from ragas.embeddings import BaseRagasEmbedding
from ragas.llms import InstructorBaseRagasLLM

SYSTEM = "Reply with one JSON object that follows the schema."


class JudgeError(RuntimeError):
    """The judge is misconfigured or returned something unusable; the message says which."""


# ragas' prompt kinds, heaviest first (calls per answer x tokens): each gets its own llama.cpp slot when there
# are enough, so the long fixed prefix of its prompt (instruction, schema, examples) stays in that slot's cache
# and only the question, answer and context are read anew. Extra slots go to the heaviest kinds.
PROMPT_KINDS = ("ContextPrecisionOutput", "NLIStatementOutput", "StatementGeneratorOutput", "AnswerRelevanceOutput")
LIST_LIMIT = 12         # statements per answer, verdicts per list: answers here are a few sentences
TEXT_LIMIT = 400        # any other string the judge writes (a generated statement or question)
ECHO_LIMIT = 120        # NLI's "statement": the judge restates a statement it was given; only its verdict counts


def slot_plan(slots: int) -> dict[str, list[int]]:
    """Which llama.cpp slots each ragas prompt kind may use. With 4 slots every kind has its own; with more,
    the extra ones go to context precision and NLI in turn; with fewer, kinds share round-robin."""
    plan: dict[str, list[int]] = {k: [] for k in PROMPT_KINDS}
    for i in range(max(slots, len(PROMPT_KINDS))):
        kind = PROMPT_KINDS[i] if i < len(PROMPT_KINDS) else PROMPT_KINDS[(i - len(PROMPT_KINDS)) % 2]
        if i < slots:
            plan[kind].append(i)
        elif not plan[kind]:
            plan[kind].append(i % slots)
    return plan


def bound_schema(schema: dict, *, reason_chars: int) -> dict:
    """``schema`` with every string and list bounded, so a grammar-driven local model cannot write for minutes:
    'reason' fields get ``reason_chars`` and a restated 'statement' ECHO_LIMIT (neither enters a score; writing them was
    most of the judge's output), other strings TEXT_LIMIT, lists LIST_LIMIT."""
    def walk(x, name=None):
        if isinstance(x, dict):
            if x.get("type") == "string" and "maxLength" not in x:
                x = {**x, "maxLength": {"reason": reason_chars, "statement": ECHO_LIMIT}.get(name, TEXT_LIMIT)}
            if x.get("type") == "array" and "maxItems" not in x:
                x = {**x, "maxItems": LIST_LIMIT}
            out = {}
            for k, v in x.items():
                if k == "properties" and isinstance(v, dict):
                    out[k] = {pn: walk(ps, pn) for pn, ps in v.items()}
                else:
                    out[k] = walk(v)
            return out
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(schema)


class SchemaJudge(InstructorBaseRagasLLM):
    """A ragas judge over one of ``core.llm``'s OpenAI-compatible LLMs (one with ``complete_json``).

    ``identity``: what the judgement cache keys on (the model file's sha256, or endpoint + model name).
    On a local llama.cpp server with several slots, each prompt kind runs only in its own slots
    (``slot_plan``); a call waits here for a free one rather than evicting another kind's cached prefix."""

    def __init__(self, llm, *, name: str, identity: str | None = None, max_tokens: int = 512,
                 timeout: float = 600.0, reason_chars: int = 80):
        if not callable(getattr(llm, "complete_json", None)):
            raise JudgeError(f"The judge needs an OpenAI-compatible LLM (bundled, gguf:<path> or openai) that can "
                             f"answer in a JSON schema; {getattr(llm, 'name', llm)!r} cannot. Set GUIDES_JUDGE.")
        self.llm = llm
        self.name = name
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.reason_chars = reason_chars
        self.identity = (f"{identity or name}|max_tokens={max_tokens}|bounds: reason {reason_chars}, statement "
                         f"{ECHO_LIMIT}, text {TEXT_LIMIT}, list {LIST_LIMIT}")
        self.calls = 0
        self.invalid = 0
        slots = int(getattr(llm, "slots", 1) or 1)
        self._plan = slot_plan(slots) if slots > 1 else {}
        self._busy: set[int] = set()
        self._cond = threading.Condition()

    def _parse(self, text: str, response_model):
        self.calls += 1
        try:
            return response_model.model_validate_json(text)
        except Exception as e:  # noqa: BLE001
            self.invalid += 1
            raise JudgeError(f"judge {self.name} returned invalid JSON for {response_model.__name__}: {e}") from e

    @contextlib.contextmanager
    def _slot(self, kind: str):
        """A free slot of ``kind``'s own (None: let the server choose, for kinds outside the plan or one slot)."""
        mine = self._plan.get(kind)
        if not mine:
            yield None
            return
        with self._cond:
            while all(s in self._busy for s in mine):
                self._cond.wait()
            slot = next(s for s in mine if s not in self._busy)
            self._busy.add(slot)
        try:
            yield slot
        finally:
            with self._cond:
                self._busy.discard(slot)
                self._cond.notify_all()

    def generate(self, prompt, response_model):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        schema = bound_schema(response_model.model_json_schema(), reason_chars=self.reason_chars)
        with self._slot(response_model.__name__) as slot:
            text = self.llm.complete_json(messages, schema, name=response_model.__name__, max_tokens=self.max_tokens,
                                          temperature=0.0, timeout=self.timeout, slot=slot)
        return self._parse(text, response_model)

    async def agenerate(self, prompt, response_model):
        # The sync client in a worker thread, not AsyncOpenAI: an async client's pooled connections belong to the
        # loop that opened them, so every later loop failed with "Connection error" (63 of 192 judgements once).
        try:
            return await asyncio.to_thread(self.generate, prompt, response_model)
        except asyncio.CancelledError:      # Ctrl-C: do not wait for the calls in flight to finish
            self.abort()
            raise

    def abort(self) -> None:
        """Close the client's connections, so calls in flight fail at once (after Ctrl-C)."""
        client = getattr(self.llm, "client", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


class FakeJudge(InstructorBaseRagasLLM):
    """Deterministic judge for tests: fills every field of the requested model from the prompt.

    Strings get the first sentence of the answer-like text in the prompt, numbers 1, lists one item:
    so Faithfulness sees one statement with verdict 1 and scores 1.0.
    """

    name = "fake (deterministic, for tests)"
    identity = "fake-judge-v1"

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
    """The ragas judge ``settings.judge`` names; None for 'off' (LLM-judged ragas metrics skipped).

    'bundled' judges with the answering model itself when that is the bundled one (``pipeline.llm``:
    the same llama.cpp server, no second model in memory); 'openai' talks to GUIDES_JUDGE_BASE_URL /
    GUIDES_JUDGE_MODEL through the same client class as answering.
    """
    from core.bundled import BUNDLED_MODELS
    from core.llm import OpenAICompatLLM, load_llm

    name = settings.judge
    bounds = {"reason_chars": settings.judge_reason_chars}
    if name == "off":
        return None
    if name == "fake":
        return FakeJudge()
    if name == "bundled":
        if settings.llm == "bundled" and pipeline is not None:
            llm = pipeline.llm
        else:
            llm = load_llm(settings.model_copy(update={"llm": "bundled"}))
        return SchemaJudge(llm, name=f"{llm.name} (local, JSON-schema constrained)",
                           identity=f"sha256:{BUNDLED_MODELS['bundled'].sha256}", **bounds)
    if name == "openai":
        if not settings.judge_base_url and not os.environ.get(settings.judge_api_key_env):
            raise JudgeError(f"GUIDES_JUDGE=openai needs GUIDES_JUDGE_BASE_URL or the key in {settings.judge_api_key_env}.")
        if not settings.judge_model:
            raise JudgeError("GUIDES_JUDGE=openai needs GUIDES_JUDGE_MODEL (e.g. gpt-4o-mini).")
        llm = OpenAICompatLLM(base_url=settings.judge_base_url, model=settings.judge_model,
                              api_key=os.environ.get(settings.judge_api_key_env),
                              context_window=settings.llm_context_window, name=f"judge:{settings.judge_model}",
                              setting_hint="GUIDES_JUDGE_BASE_URL", model_setting="GUIDES_JUDGE_MODEL",
                              key_setting="GUIDES_JUDGE_API_KEY_ENV", timeout=300.0)
        where = settings.judge_base_url or "OpenAI"
        return SchemaJudge(llm, name=f"{settings.judge_model} @ {where}", identity=f"endpoint:{where}|model:"
                           f"{settings.judge_model}", **bounds)
    raise JudgeError(f"Unknown judge {name!r} (GUIDES_JUDGE). Supported judges are: ['bundled', 'openai', 'off', 'fake']")
