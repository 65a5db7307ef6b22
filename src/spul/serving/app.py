"""The HTTP API: FastAPI routes over one frozen model, its artifacts, the key table and the batcher.

    POST /v1/classify         texts → label + log-likelihood of every candidate (as spul.evaluation.scoring)
    POST /v1/multiple-choice  question + choices → answer letter
    POST /v1/generate         greedy continuation with the caller's policy applied
    GET /v1/models, POST /v1/completions, POST /v1/chat/completions   OpenAI-compatible (spul.serving.openai_api)
    GET/POST /v1/artifacts, DELETE /v1/artifacts/{name}   admin: list, load, unload artifacts
    GET /health, GET /openapi.json

The caller's API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) selects the policy; nothing in a
request body can choose or drop it.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from spul.data.tasks import TaskConfig, TaskKind, format_multiple_choice
from spul.errors import ConfigError, SpulError
from spul.serving import inference
from spul.serving.batching import BatchConfig, Batcher, Busy, Job, JobFailed, JobKind
from spul.serving.generation import run_generation
from spul.serving.guard import RequestGuard, short, validation_error_body
from spul.serving.openai_api import add_openai_routes
from spul.serving.policies import Encoders, KeyTable, Policy
from spul.serving.registry import Registry

log = logging.getLogger(__name__)

# hard caps in the request schemas: validation stops at the first oversized field instead of
# producing one error per item (a 1 MB list of numbers would otherwise cost seconds of event-loop time)
MAX_TEXTS_HARD = 1024
MAX_CHARS_HARD = 100_000


@dataclass
class ServeConfig:
    """Limits and batching of one server."""

    max_texts: int = 64  # texts per /v1/classify request
    max_chars: int = 4000  # characters per text, question or prompt
    max_new_tokens: int = 64  # cap on /v1/generate
    max_body_bytes: int = 1_000_000  # counted as the body arrives (chunked too), before any parsing
    batch: BatchConfig = field(default_factory=BatchConfig)
    default_task: TaskConfig = field(default_factory=TaskConfig)
    # the only folder (and its subfolders) admins may load artifacts from over HTTP; None: no runtime loading
    artifact_root: str | None = None
    header_timeout_s: float = 10.0  # a connection whose request headers take longer is closed (spul serve)

    def __post_init__(self) -> None:
        if min(self.max_texts, self.max_chars, self.max_new_tokens, self.max_body_bytes) < 1:
            raise ConfigError("serve limits must be positive", "set max_texts, max_chars, max_new_tokens, max_body_bytes >= 1")
        if self.max_texts > MAX_TEXTS_HARD or self.max_chars > MAX_CHARS_HARD:
            raise ConfigError(f"serve limits max_texts={self.max_texts}, max_chars={self.max_chars} are too large",
                              f"use max_texts <= {MAX_TEXTS_HARD} and max_chars <= {MAX_CHARS_HARD}")
        if not self.header_timeout_s > 0:
            raise ConfigError(f"header timeout {self.header_timeout_s} must be positive", "use e.g. --header-timeout 10")


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS_HARD, description="inputs rendered with the policy's task template")


class MultipleChoiceRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_CHARS_HARD)
    choices: list[str] = Field(min_length=2, max_length=26, description="one per answer letter (A, B, C, D by default)")


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_CHARS_HARD)
    max_new_tokens: int = Field(default=32, ge=1, le=100_000)


class ArtifactRequest(BaseModel):
    name: str = Field(max_length=64)
    path: str = Field(max_length=4096)


class Service:
    """Everything behind the routes; the model work happens in ``run`` on the batcher's model thread."""

    def __init__(self, registry: Registry, keys: KeyTable, config: ServeConfig | None = None):
        self.registry = registry
        self.keys = keys
        self.config = config or ServeConfig()
        self.encoders = Encoders(registry.tokenizer, registry.max_length, self.config.default_task)
        self.batcher = Batcher(self.run, self.config.batch)
        self.started = time.time()

    # -- model work (model thread) -------------------------------------------------------------------------
    def run(self, kind: JobKind, policy: Policy, jobs: list[Job]) -> list[Any]:
        model, tok = self.registry.model, self.registry.tokenizer
        if kind is JobKind.GENERATE:
            return run_generation(model, tok, policy, jobs)
        task_kind = TaskKind.CLASSIFICATION if kind is JobKind.CLASSIFY else TaskKind.MULTIPLE_CHOICE
        encoder = self.encoders.for_policy(policy, task_kind)
        texts = [item for job in jobs for item in job.items]
        prompts = encoder.encode_prompts(texts)
        with policy.guard(model, texts, prompts) as hook:
            loglik = inference.score(model, encoder, prompts, policy.vectors, policy.prefix,
                                     batch_size=self.config.batch.max_batch, row_hook=hook)
        return _split(list(loglik), jobs)

    # -- request side (event loop) -------------------------------------------------------------------------
    def policy_for(self, key: str | None) -> Policy:
        from fastapi import HTTPException

        name = self.keys.policy_of(key)
        if name is None:
            raise HTTPException(401, "missing or unknown API key (send 'Authorization: Bearer KEY')", headers={"WWW-Authenticate": "Bearer"})
        policy = self.registry.get(name)
        if policy is None:  # fail closed: never fall back to the base model
            raise HTTPException(503, f"policy {name!r} bound to this key is not loaded; ask the operator to load it")
        return policy

    def check_admin(self, key: str | None) -> None:
        from fastapi import HTTPException

        if not key or (self.keys.policy_of(key) is None and not self.keys.is_admin(key)):
            raise HTTPException(401, "missing or unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if not self.keys.is_admin(key):
            raise HTTPException(403, "this key may not manage artifacts (admin key required)")

    def check_texts(self, texts: list[str]) -> None:
        from fastapi import HTTPException

        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # e.g. a lone surrogate "\ud800": no tokenizer can take it
                raise HTTPException(422, f"text {i} is not valid Unicode (it holds a lone surrogate)") from None
        if len(texts) > self.config.max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {self.config.max_texts}")
        longest = max(len(t) for t in texts)
        if longest > self.config.max_chars:
            raise HTTPException(413, f"a text has {longest} characters; the limit is {self.config.max_chars}")

    async def submit(self, job: Job) -> Any:
        from fastapi import HTTPException

        try:
            return await self.batcher.submit(job)
        except Busy as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from None
        except JobFailed as err:  # this request alone failed (the batcher re-ran it apart from the others)
            raise HTTPException(err.status, err.detail) from None

    def check_artifact_path(self, path: str) -> str:
        """The resolved folder, if it lies under the configured artifact root; else 403."""
        from pathlib import Path

        from fastapi import HTTPException

        root = self.config.artifact_root
        if not root:
            raise HTTPException(403, "loading artifacts over HTTP is disabled on this server; "
                                     "the operator can allow a folder with spul serve --artifact-root DIR")
        resolved, base = Path(path).resolve(), Path(root).resolve()
        if resolved != base and base not in resolved.parents:
            raise HTTPException(403, "artifact path is outside the server's artifact root; copy the artifact under it")
        return str(resolved)


def _split(flat: list[Any], jobs: list[Job]) -> list[list[Any]]:
    out, start = [], 0
    for job in jobs:
        out.append(flat[start:start + len(job.items)])
        start += len(job.items)
    return out


def _answer(encoder, loglik: np.ndarray) -> dict[str, Any]:
    candidates = encoder.task.candidates
    best = int(np.argmax(loglik))
    return {"label": candidates[best], "label_id": best if best < encoder.task.num_labels else None,
            "generic": best >= encoder.task.num_labels, "loglik": {c: float(v) for c, v in zip(candidates, loglik)}}


def _api_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def create_app(service: Service):
    """The FastAPI application; the batcher starts and stops with it."""
    from fastapi import FastAPI, Header, HTTPException
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @asynccontextmanager
    async def lifespan(app):
        await service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="spul unlearning server", version=__import__("spul").__version__, lifespan=lifespan,
                  description="One frozen base model, many unlearning artifacts; the API key decides which applies.")
    app.state.service = service
    # authentication and the body limit run before routing and parsing (spul.serving.guard)
    app.add_middleware(RequestGuard, is_known_key=service.keys.is_known, max_body_bytes=service.config.max_body_bytes)
    add_openai_routes(app, service)  # /v1/models, /v1/completions, /v1/chat/completions

    @app.exception_handler(RequestValidationError)
    async def bounded_validation_error(request, exc: RequestValidationError):
        return JSONResponse(validation_error_body(list(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def bounded_http_error(request, exc: StarletteHTTPException):
        detail = short(exc.detail) if isinstance(exc.detail, str) else exc.detail
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health")
    async def health(authorization: str | None = Header(None), x_api_key: str | None = Header(None)) -> dict[str, Any]:
        if not service.keys.is_known(_api_key(authorization, x_api_key)):
            return {"status": "ok"}  # liveness only: nothing about the model or the policies without a key
        return {"status": "ok", "model": service.registry.model_name, "fingerprint": service.registry.fingerprint[:12],
                "policies": service.registry.names(), "queued": service.batcher.queue.qsize() if service.batcher.queue else 0,
                "batches_run": service.batcher.batches_run, "rows_run": service.batcher.rows_run,
                "model_seconds": round(service.batcher.model_seconds, 3)}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, authorization: str | None = Header(None), x_api_key: str | None = Header(None)) -> dict[str, Any]:
        policy = service.policy_for(_api_key(authorization, x_api_key))
        service.check_texts(body.texts)
        rows = await service.submit(Job(JobKind.CLASSIFY, policy, list(body.texts)))
        encoder = service.encoders.for_policy(policy, TaskKind.CLASSIFICATION)
        return {"policy": policy.name, "results": [_answer(encoder, r) for r in rows]}

    @app.post("/v1/multiple-choice")
    async def multiple_choice(body: MultipleChoiceRequest, authorization: str | None = Header(None), x_api_key: str | None = Header(None)) -> dict[str, Any]:
        policy = service.policy_for(_api_key(authorization, x_api_key))
        encoder = service.encoders.for_policy(policy, TaskKind.MULTIPLE_CHOICE)
        letters = encoder.task.label_words
        if len(body.choices) != len(letters):
            raise HTTPException(422, f"{len(body.choices)} choices given; this policy's task has {len(letters)} ({', '.join(letters)})")
        text = format_multiple_choice(body.question, body.choices, letters)
        service.check_texts([text])
        (row,) = await service.submit(Job(JobKind.MULTIPLE_CHOICE, policy, [text]))
        answer = _answer(encoder, row)
        return {"policy": policy.name, "answer": answer["label"], **{k: answer[k] for k in ("generic", "loglik")}}

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest, authorization: str | None = Header(None), x_api_key: str | None = Header(None)) -> dict[str, Any]:
        policy = service.policy_for(_api_key(authorization, x_api_key))
        if body.max_new_tokens > service.config.max_new_tokens:
            raise HTTPException(422, f"max_new_tokens={body.max_new_tokens} exceeds the server cap {service.config.max_new_tokens}")
        service.check_texts([body.prompt])
        ids = list(service.registry.tokenizer(body.prompt, add_special_tokens=True).input_ids)
        if not ids:
            raise HTTPException(422, "the prompt tokenises to nothing; send a prompt with some text")
        (out,) = await service.submit(Job(JobKind.GENERATE, policy, [(ids, body.max_new_tokens, body.prompt)]))
        return {"policy": policy.name, "text": service.registry.tokenizer.decode(out, skip_special_tokens=True), "tokens": len(out)}

    @app.get("/v1/artifacts")
    async def list_artifacts(authorization: str | None = Header(None), x_api_key: str | None = Header(None)) -> dict[str, Any]:
        service.check_admin(_api_key(authorization, x_api_key))
        return {"artifacts": service.registry.describe()}

    @app.post("/v1/artifacts", status_code=201)
    async def add_artifact(body: ArtifactRequest, authorization: str | None = Header(None), x_api_key: str | None = Header(None)) -> dict[str, Any]:
        import asyncio

        service.check_admin(_api_key(authorization, x_api_key))
        folder = service.check_artifact_path(body.path)
        try:
            # loading runs the model (prefix cache): on the model thread, never beside a batch
            policy = await asyncio.get_running_loop().run_in_executor(service.batcher._executor, service.registry.add, body.name, folder)
        except SpulError as err:
            raise HTTPException(422 if isinstance(err, ConfigError) else 400, str(err)) from None
        return policy.describe()

    @app.delete("/v1/artifacts/{name}")
    async def remove_artifact(name: str, authorization: str | None = Header(None), x_api_key: str | None = Header(None)) -> dict[str, Any]:
        service.check_admin(_api_key(authorization, x_api_key))
        try:
            removed = service.registry.remove(name)
        except SpulError as err:
            raise HTTPException(422, str(err)) from None
        if not removed:
            raise HTTPException(404, f"no artifact named {name!r} is loaded")
        return {"removed": name}

    return app
