"""Request batching at the ingress with an adaptive wait: concurrent edits share one model call per hop.

``@serve.batch`` in a model deployment only merges the *forward passes*: every request still pays its own
DeploymentHandle call per hop (routing, an actor RPC, pickling), which on a 2-core machine costs more than
the model (``bench/serve_load.py``'s per-hop breakdown). Batching the requests in the ingress, before the hops, makes one handle
call per hop carry a whole batch, so the hop cost is shared too.

The wait adapts to the load: a batch waits for more callers only while other requests are known to be on
their way (``expect()`` counts a request from its arrival until it joins a batch or fails before it), and at
most ``max_wait_s``. A lone request at concurrency 1 therefore never waits, unlike ``@serve.batch``, which
always waits its full ``batch_wait_timeout_s`` for a second caller. While up to ``max_concurrent`` batches
are in the models the next one keeps filling, so under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Awaitable, Callable, Iterator

RunBatch = Callable[[list[Any]], Awaitable[list[Any]]]


class AdaptiveBatcher:
    """``await submit(item)`` -> ``run_batch``'s answer for that item; ``run_batch(items)`` returns one result
    per item (an ``Exception`` in that place is raised to that caller alone; if ``run_batch`` raises, every
    caller of the batch gets the error). ``max_batch_size`` 1 turns batching off."""

    def __init__(self, run_batch: RunBatch, max_batch_size: int, max_wait_s: float, max_concurrent: int = 2):
        self.run_batch, self.max_batch_size, self.max_wait_s = run_batch, max_batch_size, max_wait_s
        self.coming = 0  # requests that arrived and will submit, not yet queued
        self._queue: list[tuple[Any, asyncio.Future, float]] = []
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._loop_task: asyncio.Task | None = None
        self.sizes: dict[int, int] = {}  # batch size -> count, for tests and benchmarks

    def configure(self, max_batch_size: int, max_wait_s: float) -> None:
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s

    @contextlib.contextmanager
    def expect(self) -> Iterator[None]:
        """Around a request's work before ``submit``: while inside, a forming batch may wait for it."""
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1
            self._arrived.set()  # a forming batch re-checks whether anyone is still coming

    async def submit(self, item: Any) -> tuple[Any, float]:
        """Queue ``item``; returns (its result, seconds it waited before its batch started)."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._form_batches())
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, time.perf_counter()))
        self.coming -= 1  # balanced by expect()'s exit, which adds it back
        try:
            self._arrived.set()
            return await future
        finally:
            self.coming += 1

    async def _form_batches(self) -> None:
        while True:
            await self._slots.acquire()
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = time.perf_counter() + self.max_wait_s
            while len(self._queue) < self.max_batch_size and self.coming > 0:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            batch, self._queue = self._queue[:self.max_batch_size], self._queue[self.max_batch_size:]
            self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Any, asyncio.Future, float]]) -> None:
        started = time.perf_counter()
        try:
            results = await self.run_batch([item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch answered {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
            results = [exc] * len(batch)
        finally:
            self._slots.release()
        for (_, future, queued), result in zip(batch, results):
            if future.done():  # the caller went away (client disconnected)
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result((result, started - queued))
