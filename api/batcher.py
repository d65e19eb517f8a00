"""Micro-batching: concurrent requests share one forward pass of the engine.

    batcher = Batcher(run, batch_seconds=30)       # run(list of waves) -> list of outputs
    await batcher.start()
    outs = await batcher.submit([wave_a, wave_b])  # this request's outputs, in its order

A request is a list of waveforms (the channels of a clip, the new utterances of a stream) that
always travel together. One collector task takes the oldest waiting request, then keeps adding
waiting requests until the batch holds `batch_seconds` of audio or `max_wait_ms` have passed
since that oldest request arrived; while a batch is on the model, new requests queue up, so
under load batches fill without anyone waiting on the timer. The batch runs as ONE call of
`run` on a single worker thread (the event loop stays free), and the outputs are cut back per
request. If a batch fails, each of its requests is retried alone so only the bad one fails.

Back-pressure: at most `max_queue` requests wait; more get `Overloaded` (→ 503 with
Retry-After from the measured throughput). A request waits at most `timeout_s`; a request that
times out or whose caller goes away is dropped from the queue. `enabled=False` runs every
request as its own batch through the same queue (the benchmark's baseline).
"""
from __future__ import annotations

import asyncio
import collections
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

SAMPLE_RATE = 16_000
Run = Callable[[list[np.ndarray]], Sequence]


class Overloaded(Exception):
    """The queue is full (or the batcher is stopping); try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class TimedOut(Exception):
    """The request waited longer than its timeout for the model."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Job:
    waves: list[np.ndarray]
    seconds: float
    future: asyncio.Future
    enqueued: float


@dataclass
class Stats:
    requests: int = 0
    batches: int = 0
    waves: int = 0
    audio_s: float = 0.0
    busy_s: float = 0.0  # wall time spent in `run`
    rejected: int = 0
    timed_out: int = 0
    largest_batch: int = 0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))

    def throughput(self) -> float | None:
        """Audio-seconds per second of model time over the recent batches."""
        secs = sum(a for a, _ in self.recent)
        busy = sum(b for _, b in self.recent)
        return secs / busy if busy > 0 else None

    def as_dict(self) -> dict:
        return {"requests": self.requests, "batches": self.batches,
                "mean_batch": round(self.requests / self.batches, 2) if self.batches else None,
                "largest_batch": self.largest_batch, "audio_s": round(self.audio_s, 2),
                "busy_s": round(self.busy_s, 2), "rejected": self.rejected,
                "timed_out": self.timed_out}


class Batcher:
    def __init__(self, run: Run, *, batch_seconds: float, max_wait_ms: float = 5.0,
                 max_queue: int = 64, timeout_s: float = 30.0, enabled: bool = True):
        if batch_seconds <= 0 or max_queue < 1 or timeout_s <= 0 or max_wait_ms < 0:
            raise ValueError("batch_seconds and timeout_s must be > 0, max_queue ≥ 1, "
                             "max_wait_ms ≥ 0")
        self.run, self.enabled = run, enabled
        self.batch_seconds, self.max_wait_s = batch_seconds, max_wait_ms / 1000
        self.max_queue, self.timeout_s = max_queue, timeout_s
        self.stats = Stats()
        self._queue: collections.deque[_Job] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._running_s = 0.0  # audio on the model right now
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="emoscope-model")
        self._task = asyncio.create_task(self._loop(), name="emoscope-batcher")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(Overloaded("the server is shutting down", 5))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- callers ---------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until the queue has likely drained, from recent throughput (1 to 60)."""
        waiting = sum(j.seconds for j in self._queue) + self._running_s
        rate = self.stats.throughput()
        if not rate:
            return 1
        return int(min(60, max(1, math.ceil(waiting / rate))))

    async def submit(self, waves: list[np.ndarray], timeout_s: float | None = None) -> list:
        """Outputs for `waves`, in their order, once the model has run them."""
        if not self.running:
            raise Overloaded("the model is not running (starting or shutting down)", 5)
        if len(self._queue) >= self.max_queue:
            self.stats.rejected += 1
            raise Overloaded(f"{len(self._queue)} requests are already waiting for the model",
                             self.retry_after())
        loop = asyncio.get_running_loop()
        job = _Job(list(waves), sum(w.shape[-1] for w in waves) / SAMPLE_RATE,
                   loop.create_future(), time.monotonic())
        self._queue.append(job)
        self._wake.set()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            # A timeout or a cancelled caller cancels the future; the collector skips it.
            return await asyncio.wait_for(job.future, timeout)
        except asyncio.TimeoutError:
            self.stats.timed_out += 1
            raise TimedOut(f"no model answer within {timeout:g} s", self.retry_after()) from None

    # -- the collector -----------------------------------------------------------------------
    def _next_live(self) -> _Job | None:
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()  # timed out or abandoned while waiting
        return self._queue[0] if self._queue else None

    async def _collect(self) -> list[_Job]:
        while self._next_live() is None:
            self._wake.clear()
            await self._wake.wait()
        first = self._queue.popleft()
        batch, secs = [first], first.seconds
        if not self.enabled:
            return batch
        deadline = first.enqueued + self.max_wait_s
        while secs < self.batch_seconds:
            nxt = self._next_live()
            if nxt is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
                continue
            if secs + nxt.seconds > self.batch_seconds:
                break  # it opens the next batch
            batch.append(self._queue.popleft())
            secs += nxt.seconds
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # No name keeps the batch while the next one is awaited: its waves may be views of
            # a live stream's whole buffer, which would then outlive the stream.
            await self._run(loop, await self._collect())

    def _timed_run(self, waves: list[np.ndarray]) -> tuple[list, float]:
        t0 = time.perf_counter()
        outs = list(self.run(waves))
        return outs, time.perf_counter() - t0

    async def _run(self, loop, batch: list[_Job]) -> None:
        batch = [j for j in batch if not j.future.done()]
        if not batch:
            return
        waves = [w for j in batch for w in j.waves]
        secs = sum(j.seconds for j in batch)
        self._running_s = secs
        try:
            outs, took = await loop.run_in_executor(self._executor, self._timed_run, waves)
        except Exception as e:  # noqa: BLE001 — routed to the callers
            if len(batch) > 1:
                for job in batch:  # alone, so only the request that breaks the model fails
                    await self._run(loop, [job])
                return
            _settle(batch[0].future, error=e)
            return
        finally:
            self._running_s = 0.0
        if len(outs) != len(waves):
            err = RuntimeError(f"the model returned {len(outs)} outputs for {len(waves)} inputs")
            for job in batch:
                _settle(job.future, error=err)
            return
        st = self.stats
        st.batches += 1
        st.requests += len(batch)
        st.waves += len(waves)
        st.audio_s += secs
        st.busy_s += took
        st.largest_batch = max(st.largest_batch, len(batch))
        st.recent.append((secs, took))
        at = 0
        for job in batch:
            _settle(job.future, result=outs[at:at + len(job.waves)])
            at += len(job.waves)


def _settle(fut: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if fut.done():  # the caller gave up meanwhile
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
