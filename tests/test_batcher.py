"""The micro-batcher: shared forward passes, answers routed back, back-pressure, timeouts."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from api.batcher import Batcher, Overloaded, TimedOut
from api.runtime import engine_run
from ingest.engine import Engine, EngineOptions


def test_requests_of_different_lengths_share_a_batch_and_get_their_own_answers(model, speech):
    rng = np.random.default_rng(3)
    requests = []
    for k in range(6):  # 1 to 3 waves each, 0.4 to 3 s
        n = [int(rng.uniform(0.4, 3.0) * 16000) for _ in range(1 + k % 3)]
        starts = [int(rng.integers(0, speech.size - m)) for m in n]
        requests.append([speech[s:s + m] for s, m in zip(starts, n)])
    alone = Engine(model, EngineOptions(warmup=False))

    async def main():
        b = Batcher(engine_run(model, 30.0), batch_seconds=30.0, max_wait_ms=200)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(r) for r in requests)), b.stats
        finally:
            await b.close()

    answers, stats = asyncio.run(main())
    assert stats.requests == 6 and stats.batches < 6 and stats.largest_batch >= 2
    for req, got in zip(requests, answers):
        ref = alone.run(req)
        assert len(got) == len(req)
        for g, r, w in zip(got, ref, req):
            assert g.frame_logits.shape == r.frame_logits.shape
            assert g.frame_logits.shape[0] == alone.net.frames(w.size)
            assert np.allclose(g.scores, r.scores, atol=1e-5)
            assert np.allclose(g.embedding, r.embedding, atol=1e-4)


def test_unbatched_mode_runs_each_request_alone():
    seen = []

    def run(waves):
        seen.append(len(waves))
        return [w.sum() for w in waves]

    async def main():
        b = Batcher(run, batch_seconds=30.0, max_wait_ms=200, enabled=False)
        await b.start()
        try:
            waves = [np.ones(1600 * (i + 1), np.float32) for i in range(4)]
            return await asyncio.gather(*(b.submit([w, w]) for w in waves))
        finally:
            await b.close()

    answers = asyncio.run(main())
    assert seen == [2, 2, 2, 2]
    assert [a[0] for a in answers] == [1600, 3200, 4800, 6400]


def test_full_queue_timeout_and_a_failing_request():
    gate = threading.Event()

    def run(waves):
        gate.wait(10)
        if any(w.size == 7 for w in waves):
            raise ValueError("bad wave")
        return [w.size for w in waves]

    async def main():
        b = Batcher(run, batch_seconds=30.0, max_wait_ms=0, max_queue=2, timeout_s=5)
        await b.start()
        try:
            first = asyncio.create_task(b.submit([np.zeros(100)]))
            while b.stats.batches == 0 and b._running_s == 0:
                await asyncio.sleep(0.005)  # first is on the model, held by the gate
            waiting = [asyncio.create_task(b.submit([np.zeros(n)])) for n in (7, 300)]
            await asyncio.sleep(0.01)
            with pytest.raises(Overloaded) as full:
                await b.submit([np.zeros(10)])
            assert full.value.retry_after >= 1
            gate.set()
            assert await first == [100]
            bad, good = await asyncio.gather(*waiting, return_exceptions=True)
            # The two waiting requests shared a batch; the bad one fails alone.
            assert isinstance(bad, ValueError) and good == [300]
            gate.clear()  # the next request is held on the model past its timeout
            slow = asyncio.create_task(b.submit([np.zeros(5)], timeout_s=0.05))
            with pytest.raises(TimedOut):
                await slow
            gate.set()
            assert await b.submit([np.zeros(9)]) == [9]  # still serving
            return b.stats
        finally:
            gate.set()
            await b.close()

    stats = asyncio.run(main())
    assert stats.rejected == 1 and stats.timed_out >= 1
