"""An OpenAI-compatible HTTP API over the guides: any chat client can ask them, with citations.

``guides api`` serves (Starlette on uvicorn, bodies validated by pydantic):

- ``GET /v1/models``: one model, ``guides-qa``;
- ``POST /v1/chat/completions``: the conversation's user turns go through the same ``Pipeline`` as the app and
  the CLI (follow-up rewriting, refusal, verification), streamed as server-sent events or not. ``content`` is
  the answer with its [n] markers; everything else (citations, evidence quotes with guide, section and lines,
  the answer state, the refusal) is in the extra field ``guides_qa`` of the response, and of the last chunk when
  streaming, which OpenAI clients ignore. A streamed answer is the model's own words as they come; when the
  checked answer differs (markers attached, or refused after checking), the last content chunk says so, so a
  plain client shows the verdict too;
- ``POST /v1/search``: the ranked passages (``guides ask --retrieve-only --json``);
- ``GET /health``: ready or loading, with the index version.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with a message that says what
to fix. With ``api_key`` set, requests need ``Authorization: Bearer <key>``; binding to anything but loopback
without a key is refused at start. Clients share the one local model through the app's queue
(``guides_qa.ui.engine``); a client that disconnects mid-stream stops its generation.

Example::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    r = client.chat.completions.create(model="guides-qa", messages=[{"role": "user", "content": "What is LoRA?"}])
    print(r.choices[0].message.content, r.model_extra["guides_qa"]["citations"])
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import re
import threading
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from core.settings import Settings

log = logging.getLogger("guides_qa.api")
MODEL_ID = "guides-qa"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# --------------------------------------------------------------------------- request bodies
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")        # temperature, max_tokens, ...: accepted, the pipeline decides
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str | None = None
    messages: list[ChatMessage] | None = None
    top_k: int | None = Field(None, ge=1, le=100)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


def _text(content) -> str:
    """A message's text: a string, or the text parts of OpenAI's content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def user_turns(messages: list[ChatMessage]) -> list[str]:
    """The user's questions, in order: what the pipeline rewrites follow-ups from (the assistant's earlier
    replies are the pipeline's own; system prompts do not steer it)."""
    turns = [_text(m.content).strip() for m in messages if m.role == "user"]
    turns = [t for t in turns if t]
    if not turns:
        raise ApiError(400, "The conversation has no user message with text: put the question in a message with "
                            "role 'user'.", param="messages", code="empty_messages")
    return turns


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond this machine without a key."""
    if host not in LOOPBACK and not api_key:
        raise ValueError(f"Refusing to listen on {host} without an API key: anyone who can reach it could use the "
                         f"model. Set GUIDES_API_KEY (clients send 'Authorization: Bearer <key>') or use "
                         f"--host 127.0.0.1.")


# --------------------------------------------------------------------------- the app
def create_app(settings: Settings, *, engine=None, api_key: str | None = None) -> Starlette:
    """The ASGI app; ``engine`` (guides_qa.ui.engine.Engine) shares the models and the model queue."""
    from guides_qa.ui.engine import Engine

    engine = engine or Engine()
    warmup = engine.warm(settings)
    key = api_key if api_key is not None else settings.api_key_value()

    def pipeline():
        return engine.pipeline(settings)

    async def guard(request: Request) -> None:
        if key:
            got = request.headers.get("authorization", "")
            if not (got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip(), key)):
                raise ApiError(401, "Missing or wrong API key: send 'Authorization: Bearer <key>' with the key set "
                                    "in GUIDES_API_KEY.", type="authentication_error", code="invalid_api_key")

    async def body(request: Request, model: type[BaseModel]):
        raw = await request.body()
        if len(raw) > settings.api_max_body_bytes:
            raise ApiError(413, f"The request body is {len(raw):,} bytes; the limit is {settings.api_max_body_bytes:,} "
                                "(setting api_max_body_bytes).", code="request_too_large")
        try:
            data = json.loads(raw or b"null")
        except ValueError as e:
            raise ApiError(400, f"The request body is not valid JSON ({e}).", code="invalid_json") from None
        try:
            return model.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "body"
            raise ApiError(400, f"{where}: {first['msg']}", param=where, code="invalid_request") from None

    def handled(fn):
        async def run(request: Request):
            try:
                await guard(request)
                return await fn(request)
            except ApiError as e:
                return e.response()
            except Exception as e:  # noqa: BLE001 - logged, and answered in OpenAI's shape
                from pipeline.qa import InputError

                if isinstance(e, InputError):
                    return ApiError(400, str(e), param="messages", code="invalid_question").response()
                log.error("api: %s %s failed: %s", request.method, request.url.path, e, exc_info=e)
                return ApiError(500, f"{type(e).__name__}: {e}", type="server_error").response()
        return run

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0,
                                                         "owned_by": "guides-qa"}]})

    async def health(request: Request):
        from ingest.store import IndexLayout

        vid = IndexLayout(settings).current_vid()
        ready = warmup.ready.is_set()
        return JSONResponse({"status": "ready" if ready and vid else "loading" if vid else "no index",
                             "index_version": vid, "errors": [s.error for s in warmup.errors]},
                            status_code=200 if vid else 503)

    async def search(request: Request):
        req = await body(request, SearchRequest)
        if req.query is None and not req.messages:
            raise ApiError(400, "Give 'query' (a question) or 'messages' (a conversation).", param="query")
        turns = [req.query] if req.query is not None else user_turns(req.messages)
        await asyncio.to_thread(warmup.wait, 600)
        res = await asyncio.to_thread(lambda: pipeline().retrieve(turns, mode=req.mode, top_k=req.top_k))
        return JSONResponse(res.to_json())

    async def chat(request: Request):
        req = await body(request, ChatRequest)
        if req.model != MODEL_ID:
            raise ApiError(404, f"Unknown model {req.model!r}: this server has one model, {MODEL_ID!r} "
                                "(GET /v1/models).", param="model", code="model_not_found")
        from pipeline.qa import validate_turns

        turns = validate_turns(user_turns(req.messages), max_chars=settings.max_question_chars)   # before streaming
        await asyncio.to_thread(warmup.wait, 600)
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not req.stream:
            res = await asyncio.to_thread(lambda: pipeline().ask(turns))
            a = res.answer
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": MODEL_ID,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": a.answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": a.prompt_tokens, "completion_tokens": 0,
                          "total_tokens": a.prompt_tokens},
                "guides_qa": extra(res)})
        return StreamingResponse(stream_chat(request, turns, cid, created), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def stream_chat(request: Request, turns: list[str], cid: str, created: int):
        from answer.answerer import Token
        from pipeline.qa import AskResult

        events: queue.Queue = queue.Queue()
        stop = threading.Event()

        def produce():
            gen = pipeline().ask_stream(turns)
            try:
                for ev in gen:
                    if stop.is_set():
                        break
                    events.put(ev)
            except Exception as e:  # noqa: BLE001 - reported as the stream's last event
                events.put(e)
            finally:
                gen.close()               # closes the model's stream: llama.cpp stops generating
                events.put(None)

        def chunk(delta: dict, finish: str | None = None, **more) -> str:
            return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                          "model": MODEL_ID, "choices": [{"index": 0, "delta": delta,
                                                                          "finish_reason": finish}], **more},
                                         ensure_ascii=False) + "\n\n"

        worker = threading.Thread(target=produce, name="guides-api-answer", daemon=True)
        worker.start()
        yield chunk({"role": "assistant", "content": ""})
        written = ""
        try:
            while True:
                try:
                    ev = await asyncio.to_thread(events.get, True, 0.5)
                except queue.Empty:
                    if await request.is_disconnected():
                        log.info("api: client went away mid-stream; stopping its answer")
                        return
                    continue
                if ev is None:
                    break
                if isinstance(ev, Exception):
                    yield "data: " + json.dumps({"error": {"message": f"{type(ev).__name__}: {ev}",
                                                           "type": "server_error"}}) + "\n\n"
                    break
                if isinstance(ev, Token):
                    written += ev.text
                    yield chunk({"content": ev.text})
                elif isinstance(ev, AskResult):
                    final = ev.answer.answer
                    if ev.answer.refused and written.strip():
                        yield chunk({"content": "\n\n(Checked against the guides: " + final + ")"})
                    elif not written.strip():
                        yield chunk({"content": final})
                    elif _words(final) != _words(written):
                        yield chunk({"content": "\n\n(With its citations: " + final + ")"})
                    yield chunk({}, "stop", guides_qa=extra(ev))
            yield "data: [DONE]\n\n"
        finally:
            stop.set()

    return Starlette(routes=[
        Route("/v1/models", handled(models), methods=["GET"]),
        Route("/v1/chat/completions", handled(chat), methods=["POST"]),
        Route("/v1/search", handled(search), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])


def _words(text: str) -> str:
    """The text without [n] markers, spaces and sentence punctuation: two renderings of one answer compare equal."""
    return re.sub(r"\[\d+\]|[\s.,;:!?]", "", text)


def extra(res) -> dict:
    """What OpenAI clients ignore and ours read: the checked answer, its state, citations, evidence, passages."""
    a = res.answer
    return {"answer": a.answer, "status": a.status, "refused": a.refused, "refusal_reason": a.refusal_reason,
            "rewritten_query": a.rewritten_query, "citations": [c.to_json() for c in a.citations],
            "evidence": a.evidence, "left_out": a.left_out,
            "passages": [p.to_json() for p in a.passages],
            "timings_ms": {k: round(v, 1) for k, v in res.timings_ms.items()}}


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the API until SIGTERM or Ctrl-C; the local model server stops with it."""
    import uvicorn

    from guides_qa.ui.engine import Engine

    check_bind(host, settings.api_key_value())
    engine = Engine()
    app = create_app(settings, engine=engine)
    log.info("api: serving %s on http://%s:%d/v1", MODEL_ID, host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        engine.close()
