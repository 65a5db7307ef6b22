"""OpenAI-compatible endpoints, so existing clients (the ``openai`` package, LangChain, curl scripts) plug in.

    GET  /v1/models              the caller's model (one: the policy its API key is bound to)
    GET  /v1/models/{id}
    POST /v1/completions         prompt → text
    POST /v1/chat/completions    messages → assistant message (the tokenizer's chat template)

Sampling: ``temperature`` (0 = greedy; default 1 as in OpenAI's API), ``top_p``, ``max_tokens``, ``seed``,
``stop`` (up to 4 strings, cut from the text as OpenAI does) and ``stream`` (server-sent events in OpenAI's
chunk format, ending ``data: [DONE]``; ``stream_options.include_usage`` adds a usage chunk). One choice per
request: ``n`` other than 1 is refused with 400, as are parameters this server cannot honour (logprobs, echo,
suffix, penalties, logit_bias, tools).

The policy comes from the API key (``Authorization: Bearer KEY``), exactly as on the other routes. The body's
``model`` field never chooses it: it must name the key's own model (its policy name, or the base model name)
and is echoed back; anything else is a 404 that names the right id. Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spul.serving.batching import Job, JobKind
from spul.serving.generation import GenItem
from spul.serving.inference import Sampling

try:  # the serve extra; route signatures need the real class (annotations are strings here)
    from fastapi import Request
except ImportError:  # pragma: no cover - spul without [serve]
    Request = Any  # type: ignore[misc,assignment]

if TYPE_CHECKING:
    from spul.serving.app import Service

log = logging.getLogger(__name__)
MAX_STOP = 4
MAX_STOP_CHARS = 64
UNSUPPORTED = ("echo", "suffix", "logprobs", "top_logprobs", "logit_bias", "tools", "functions", "function_call", "tool_choice")


class OpenAIError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.type = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                     413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}.get(
            status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Sampled(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="the caller's model id (GET /v1/models); never chooses the policy")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    best_of: int | None = None
    user: str | None = None


class CompletionRequest(_Sampled):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def _api_key(request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization") or ""
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class OpenAIRoutes:
    """Request handling for the OpenAI routes over a ``spul.serving.app.Service``."""

    def __init__(self, service: Service):
        self.service = service

    # -- checks ---------------------------------------------------------------------------------------------
    def policy(self, request):
        from fastapi import HTTPException

        try:
            return self.service.policy_for(_api_key(request))
        except HTTPException as err:
            raise OpenAIError(err.status_code, str(err.detail), code="invalid_api_key" if err.status_code == 401 else None,
                              headers=err.headers) from None

    def model_ids(self, policy) -> list[str]:
        return [policy.name, self.service.registry.model_name]

    def check_model(self, policy, model: str) -> str:
        if model not in self.model_ids(policy):
            raise OpenAIError(404, f"model {model[:80]!r} is not served to this API key; use model={policy.name!r} "
                                   "(GET /v1/models lists it; the key, not the model field, selects the policy)",
                              param="model", code="model_not_found")
        return policy.name

    async def parse(self, request, cls):
        raw = await request.body()
        if len(raw) > self.service.config.max_body_bytes:
            raise OpenAIError(413, f"request body of {len(raw)} bytes exceeds {self.service.config.max_body_bytes}")
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise OpenAIError(400, "request body is not valid JSON; send a JSON object with Content-Type: application/json") from None
        if not isinstance(data, dict):
            raise OpenAIError(400, "request body must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or None
            raise OpenAIError(400, f"invalid field {where}: {first.get('msg', 'invalid value')}", param=where) from None

    def sampling(self, body: _Sampled, default_max: int) -> tuple[Sampling, int]:
        if body.n != 1:
            raise OpenAIError(400, f"n={body.n} is not supported: this server returns exactly one choice (use n=1 and "
                                   "repeat the request with different seeds for more)", param="n")
        if body.best_of not in (None, 1):
            raise OpenAIError(400, f"best_of={body.best_of} is not supported (only 1)", param="best_of")
        if body.presence_penalty or body.frequency_penalty:
            raise OpenAIError(400, "presence_penalty and frequency_penalty are not supported; leave them at 0", param="presence_penalty")
        extra = body.model_extra or {}
        for name in UNSUPPORTED:
            if extra.get(name) not in (None, False, 0, [], {}):
                raise OpenAIError(400, f"parameter {name!r} is not supported by this server; remove it", param=name)
        fmt = extra.get("response_format")
        if fmt not in (None, {"type": "text"}):
            raise OpenAIError(400, "response_format other than {'type': 'text'} is not supported", param="response_format")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > MAX_STOP or any(not s or len(s) > MAX_STOP_CHARS for s in stop):
            raise OpenAIError(400, f"stop takes at most {MAX_STOP} non-empty strings of up to {MAX_STOP_CHARS} characters", param="stop")
        cap = self.service.config.max_new_tokens
        limit = getattr(body, "max_completion_tokens", None) or body.max_tokens or min(default_max, cap)
        if limit > cap:
            raise OpenAIError(400, f"max_tokens={limit} exceeds this server's cap of {cap}; ask for at most {cap}", param="max_tokens")
        return Sampling(temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=tuple(stop)), limit

    def check_chars(self, texts: list[str]) -> None:
        from fastapi import HTTPException

        try:
            self.service.check_texts(texts)
        except HTTPException as err:
            raise OpenAIError(err.status_code, str(err.detail)) from None

    # -- text -------------------------------------------------------------------------------------------------
    def finish(self, tokens: list[int], limit: int, stop: tuple[str, ...]) -> tuple[str, str]:
        """The visible text and OpenAI's finish_reason of a row's generated ids."""
        text = self.service.registry.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            return text[:cut], "stop"
        return text, "length" if len(tokens) >= limit else "stop"

    def partial(self, tokens: list[int], limit: int, stop: tuple[str, ...]) -> tuple[str, bool]:
        """What may be streamed so far: text before a stop string, holding back a possible stop-string start."""
        eos = self.service.registry.tokenizer.eos_token_id
        ended = False
        if eos is not None and eos in tokens:
            tokens, ended = tokens[: tokens.index(eos)], True
        if len(tokens) >= limit:
            tokens, ended = tokens[:limit], True
        text = self.service.registry.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            return text[:cut], True
        hold = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        text = text[: len(text) - hold]
        return text.rstrip("\ufffd"), ended

    # -- generation --------------------------------------------------------------------------------------------
    async def submit(self, policy, item: GenItem) -> asyncio.Future:
        """Queue one row; 503 at once when the server is busy."""
        from fastapi import HTTPException

        task = asyncio.ensure_future(self.service.submit(Job(JobKind.GENERATE, policy, [item])))
        await asyncio.sleep(0)  # lets submit() queue the job (or refuse it) before we answer
        if task.done() and task.exception() is not None:
            err = task.exception()
            if isinstance(err, HTTPException):
                raise OpenAIError(err.status_code, str(err.detail), headers=err.headers)
            raise err
        return task

    async def run(self, request, policy, body: _Sampled, ids: list[int], text: str, default_max: int, chat: bool):
        from fastapi.responses import JSONResponse, StreamingResponse

        sampling, limit = self.sampling(body, default_max)
        model = self.check_model(policy, body.model)
        created, rid = int(time.time()), _new_id("chatcmpl" if chat else "cmpl")
        if not body.stream:
            task = await self.submit(policy, GenItem(ids, limit, text, sampling))
            try:
                (tokens,) = await task
            except Exception as err:  # noqa: BLE001 - a failed batch answers 500 in OpenAI's shape
                raise _failure(err) from None
            out, reason = self.finish(tokens, limit, sampling.stop)
            choice = ({"index": 0, "message": {"role": "assistant", "content": out}, "logprobs": None, "finish_reason": reason}
                      if chat else {"index": 0, "text": out, "logprobs": None, "finish_reason": reason})
            return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                                 "model": model, "system_fingerprint": self.fingerprint, "choices": [choice],
                                 "usage": _usage(len(ids), len(tokens))})
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        task = await self.submit(policy, GenItem(ids, limit, text, sampling, sink=lambda t: loop.call_soon_threadsafe(queue.put_nowait, t)))
        usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(self.events(task, queue, rid, created, model, ids, limit, sampling, chat, usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @property
    def fingerprint(self) -> str:
        return "fp_" + self.service.registry.fingerprint[:12]

    async def events(self, task, queue, rid, created, model, ids, limit, sampling, chat, usage) -> AsyncIterator[str]:
        def chunk(delta: str | None, reason: str | None = None, role: bool = False) -> str:
            if chat:
                content = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta is not None else {})
                choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
            return _sse({"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                         "model": model, "system_fingerprint": self.fingerprint, "choices": [choice]})

        if chat:
            yield chunk(None, role=True)
        tokens: list[int] = []
        sent, ended = "", False
        while not ended:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            token = getter.result()
            if token is None:
                break
            tokens.append(token)
            visible, ended = self.partial(tokens, limit, sampling.stop)
            if len(visible) > len(sent) and visible.startswith(sent):
                yield chunk(visible[len(sent):])
                sent = visible
        try:
            (final,) = await task
        except Exception as err:  # noqa: BLE001 - the stream reports the failure in-band, then ends
            yield _sse(_failure(err).body())
            yield "data: [DONE]\n\n"
            return
        text, reason = self.finish(final, limit, sampling.stop)
        if len(text) > len(sent) and text.startswith(sent):
            yield chunk(text[len(sent):])
        yield chunk(None, reason)
        if usage:
            yield _sse({"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                        "model": model, "choices": [], "usage": _usage(len(ids), len(final))})
        yield "data: [DONE]\n\n"

    # -- endpoints ---------------------------------------------------------------------------------------------
    async def completions(self, request):
        policy = self.policy(request)
        body = await self.parse(request, CompletionRequest)
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise OpenAIError(400, f"{len(prompt)} prompts in one request; send one prompt per request", param="prompt")
            prompt = prompt[0]
        if not prompt:
            raise OpenAIError(400, "prompt is empty", param="prompt")
        self.check_chars([prompt])
        ids = list(self.service.registry.tokenizer(prompt, add_special_tokens=True).input_ids)
        return await self.run(request, policy, body, ids, prompt, default_max=16, chat=False)

    async def chat_completions(self, request):
        policy = self.policy(request)
        body = await self.parse(request, ChatRequest)
        tok = self.service.registry.tokenizer
        if not getattr(tok, "chat_template", None):
            raise OpenAIError(400, f"the model {self.service.registry.model_name!r} has no chat template; use POST /v1/completions",
                              param="messages")
        if len(body.messages) > self.service.config.max_texts:
            raise OpenAIError(413, f"{len(body.messages)} messages; the limit is {self.service.config.max_texts}", param="messages")
        messages = []
        for i, message in enumerate(body.messages):
            content = message.content
            if isinstance(content, list):
                if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in content):
                    raise OpenAIError(400, f"messages[{i}].content: only text parts are supported", param=f"messages.{i}.content")
                content = "".join(part["text"] for part in content)
            messages.append({"role": "system" if message.role == "developer" else message.role, "content": content or ""})
        text = "\n".join(m["content"] for m in messages)
        self.check_chars([text])
        try:
            rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as err:  # noqa: BLE001 - a template that rejects the conversation is the caller's to fix
            raise OpenAIError(400, f"the chat template rejected these messages ({str(err).splitlines()[0][:150] if str(err) else type(err).__name__})",
                              param="messages") from None
        ids = list(tok(rendered, add_special_tokens=False).input_ids)
        return await self.run(request, policy, body, ids, text, default_max=self.service.config.max_new_tokens, chat=True)

    def models(self, request, model_id: str | None = None) -> dict[str, Any]:
        policy = self.policy(request)
        card = {"id": policy.name, "object": "model", "created": int(self.service.started), "owned_by": "spul",
                "root": self.service.registry.model_name, "parent": None}
        if model_id is None:
            return {"object": "list", "data": [card]}
        self.check_model(policy, model_id)
        return card


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _failure(err: Exception) -> OpenAIError:
    if isinstance(err, OpenAIError):
        return err
    log.error("generation failed: %s", err, exc_info=err)
    return OpenAIError(500, f"generation failed ({type(err).__name__}); the server log has details")


def add_openai_routes(app, service: Service) -> None:
    """Mount the OpenAI-compatible routes on ``app`` (a FastAPI application serving ``service``)."""
    from fastapi.responses import JSONResponse

    routes = OpenAIRoutes(service)

    async def on_error(request, err: OpenAIError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    app.add_exception_handler(OpenAIError, on_error)

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> dict[str, Any]:
        return routes.models(request)

    @app.get("/v1/models/{model_id:path}", tags=["openai"])
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        return routes.models(request, model_id)

    @app.post("/v1/completions", tags=["openai"])
    async def completions(request: Request):
        """OpenAI Completions: ``prompt`` → text, with the caller's policy applied."""
        return await routes.completions(request)

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(request: Request):
        """OpenAI Chat Completions: ``messages`` rendered with the tokenizer's chat template."""
        return await routes.chat_completions(request)
