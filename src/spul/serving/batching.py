"""Dynamic batching: requests that arrive within a few milliseconds share one forward pass.

One bounded ``asyncio.Queue`` feeds one worker. The worker takes a request, keeps collecting for up to
``max_wait_ms`` or until ``max_batch`` rows are waiting, groups what it has by (endpoint, policy) and runs
each group in a single model thread, so the event loop stays free and the model is never used by two batches
at once. A full queue refuses new work at once (``Busy`` → HTTP 503) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import enum
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from spul.errors import ConfigError


class JobKind(str, enum.Enum):
    CLASSIFY = "classify"
    MULTIPLE_CHOICE = "multiple_choice"
    GENERATE = "generate"


class Busy(Exception):
    """The queue is full; the client should retry later."""


class JobFailed(Exception):
    """One request failed on its own (it was re-run apart from its batch); ``status``/``detail`` for the client.

    Input problems (a text the tokenizer refuses: ValueError, TypeError, UnicodeError, ...) are the client's (422);
    anything else is the server's (500). The detail is short and never echoes the request.
    """

    CLIENT_ERRORS = (ValueError, TypeError, UnicodeError, LookupError)

    def __init__(self, error: BaseException):
        self.error = error
        self.status = 422 if isinstance(error, self.CLIENT_ERRORS) else 500
        what = "this request could not be processed" if self.status == 422 else "the model failed on this request"
        super().__init__(f"{what} ({type(error).__name__})")
        self.detail = str(self)


@dataclass
class Job:
    kind: JobKind
    policy: Any  # spul.serving.policies.Policy
    items: list[Any]  # one entry per row (encoded prompt, or (prompt, max_new_tokens) for generation)
    future: asyncio.Future | None = None
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def group(self) -> tuple[str, int]:
        return (self.kind.value, id(self.policy))


@dataclass
class BatchConfig:
    max_batch: int = 32  # rows per forward pass
    max_wait_ms: float = 5.0  # how long the worker waits for company before running a batch
    max_queue: int = 256  # requests waiting; beyond this the server answers 503

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_wait_ms < 0:
            raise ConfigError(f"invalid batching settings {self}", "use max_batch >= 1, max_queue >= 1, max_wait_ms >= 0")


# runs one group (same kind, same policy) and returns one result per job, in order
Runner = Callable[[JobKind, Any, list[Job]], list[Any]]


class Batcher:
    def __init__(self, runner: Runner, config: BatchConfig | None = None):
        self.runner = runner
        self.config = config or BatchConfig()
        self.queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spul-model")
        self.batches_run = 0
        self.rows_run = 0
        self.model_seconds = 0.0  # time spent in the model thread (the rest of a request's latency is HTTP and queueing)

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.config.max_queue)
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, job: Job) -> Any:
        """Queue ``job`` and wait for its result; ``Busy`` at once if the queue is full."""
        job.future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Busy(f"server busy: {self.config.max_queue} requests already waiting") from None
        return await job.future

    async def _collect(self) -> list[Job]:
        first = await self.queue.get()
        jobs, rows = [first], len(first.items)
        deadline = time.perf_counter() + self.config.max_wait_ms / 1000
        while rows < self.config.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            jobs.append(job)
            rows += len(job.items)
        return jobs

    def _chunks(self, jobs: list[Job]) -> list[list[Job]]:
        """Same-group jobs in chunks of at most ``max_batch`` rows (a single larger job runs alone)."""
        groups: dict[tuple[str, int], list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.group, []).append(job)
        chunks = []
        for members in groups.values():
            current, rows = [], 0
            for job in members:
                if current and rows + len(job.items) > self.config.max_batch:
                    chunks.append(current)
                    current, rows = [], 0
                current.append(job)
                rows += len(job.items)
            chunks.append(current)
        return chunks

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            for chunk in self._chunks(jobs):
                live = [j for j in chunk if not j.future.done()]  # a client that went away is skipped
                if not live:
                    continue
                await self._run_chunk(loop, live)

    async def _run_chunk(self, loop, live: list[Job]) -> None:
        """Run one chunk; if it fails, run each of its jobs alone so only the failing request gets the error."""
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.runner, live[0].kind, live[0].policy, live)
        except Exception as err:  # noqa: BLE001 - one failing batch must not stop the worker, nor fail its neighbours
            if len(live) > 1:
                for job in live:
                    if not job.future.done():
                        await self._run_chunk(loop, [job])
                return
            if not live[0].future.done():
                live[0].future.set_exception(JobFailed(err))
            return
        self.model_seconds += time.perf_counter() - started
        self.batches_run += 1
        self.rows_run += sum(len(j.items) for j in live)
        for job, result in zip(live, results):
            if not job.future.done():
                job.future.set_result(result)
