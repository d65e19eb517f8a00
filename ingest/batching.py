"""The cross-file segment queue: speech segments of many files wait here for the model, which
takes them in batches filled to the batch budget, whoever they belong to.

Batches are formed as the engine plans them (longest first; count × longest ≤ budget; padding
≤ MAX_WASTE), over everything waiting, so segments of similar length from different files
share a batch. A full batch goes at once, the one holding the oldest segment first; a part-full
batch goes only when nothing new has arrived for `idle_s` (the model would otherwise sit idle)
or at the end. The queue holds at most `cap_s` audio-seconds (plus one part): `put` blocks
beyond that, which is what keeps memory flat however many files are queued.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from core.media.audio import SAMPLE_RATE

MAX_WASTE = 0.2
IDLE_S = 0.02  # no new segment for this long: a part-full batch goes rather than the model idle
MAX_ROUNDS = 8  # a segment passed over this many times goes next, full batch or not


@dataclass(eq=False)
class Waiting:
    key: Hashable  # whose it is (the executor's file and part)
    index: int  # its place in that part
    wave: np.ndarray
    seq: int  # arrival order
    rounds: int = 0


class SegmentQueue:
    def __init__(self, budget_s: float, cap_s: float, max_waste: float = MAX_WASTE,
                 idle_s: float | None = None):
        self.budget = int(budget_s * SAMPLE_RATE)
        self.cap = int(cap_s * SAMPLE_RATE)
        self.max_waste = max_waste
        self.idle_s = IDLE_S if idle_s is None else idle_s
        self.items: list[Waiting] = []
        self.held = 0  # samples waiting
        self.peak = 0
        self.largest_put = 0
        self.closed = False
        self.last_put = time.monotonic()
        self._seq = 0
        self.cv = threading.Condition()

    # -- producers -----------------------------------------------------------------------
    def put(self, key: Hashable, waves: list[np.ndarray]) -> bool:
        """Add one part's segments; blocks while the queue is at its cap. False if closed."""
        with self.cv:
            while self.held >= self.cap and not self.closed:
                self.cv.wait(0.1)
            if self.closed:
                return False
            for i, w in enumerate(waves):
                self.items.append(Waiting(key, i, w, self._seq))
                self._seq += 1
                self.held += w.shape[0]
            self.peak = max(self.peak, self.held)
            self.largest_put = max(self.largest_put, sum(w.shape[0] for w in waves))
            self.last_put = time.monotonic()
            self.cv.notify_all()
            return True

    def drop(self, owner) -> None:
        """Forget every waiting segment whose key's owner (key[0]) is `owner` (a failed file)."""
        with self.cv:
            keep = [w for w in self.items if w.key[0] != owner]
            self.held = sum(w.wave.shape[0] for w in keep)
            self.items = keep
            self.cv.notify_all()

    def close(self) -> None:
        """No more input: what is left goes out in part-full batches, then take() gives None."""
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    @property
    def held_s(self) -> float:
        return self.held / SAMPLE_RATE

    # -- the model -----------------------------------------------------------------------
    def take(self, timeout: float | None = None, max_batches: int = 1) -> list[Waiting] | None:
        """The next batch (up to `max_batches` full ones at once, in planned order, so the
        model can queue one on the device while the previous one's results come back); None
        once closed and empty, [] when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cv:
            while True:
                if not self.items:
                    if self.closed:
                        return None
                else:
                    batches, full = self._choose(max_batches)
                    idle = time.monotonic() - self.last_put >= self.idle_s
                    if full or self.closed or idle:
                        return self._pop([w for b in batches for w in b])
                wait = self.idle_s if self.items else 0.1
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    wait = min(wait, left)
                self.cv.wait(wait)

    def _plan(self) -> list[list[Waiting]]:
        order = sorted(self.items, key=lambda w: (-w.wave.shape[0], w.seq))
        batches, cur, used = [], [], 0
        for w in order:
            n = w.wave.shape[0]
            if cur:
                padded = (len(cur) + 1) * cur[0].wave.shape[0]
                if padded > self.budget or padded - used - n > self.max_waste * padded:
                    batches.append(cur)
                    cur, used = [], 0
            cur.append(w)
            used += n
        if cur:
            batches.append(cur)
        return batches

    def _choose(self, max_batches: int) -> tuple[list[list[Waiting]], bool]:
        """The batches to run next and whether they are full (the last planned one may still
        grow): the first full ones of the plan, with the oldest segment's batch among them
        (its own batch, or the open one once it has waited MAX_ROUNDS takes). The engine plans
        such a selection into these same batches: each is a run of the length order."""
        batches = self._plan()
        oldest = min(self.items, key=lambda w: w.seq)
        home = next(i for i, b in enumerate(batches) if any(w is oldest for w in b))
        n_full = len(batches) - 1
        due = home < n_full or oldest.rounds >= MAX_ROUNDS
        if not n_full and not due:
            return [batches[-1]], False
        chosen = list(range(min(max_batches, n_full)))
        if due and home not in chosen:
            chosen = chosen[:max_batches - 1] + [home]
        return [batches[i] for i in chosen], True

    def _pop(self, batch: list[Waiting]) -> list[Waiting]:
        taken = {id(w) for w in batch}
        self.items = [w for w in self.items if id(w) not in taken]
        for w in self.items:
            w.rounds += 1
        self.held -= sum(w.wave.shape[0] for w in batch)
        self.cv.notify_all()
        return batch

    def stats(self) -> dict[str, Any]:
        return {"peak_queued_s": self.peak / SAMPLE_RATE, "cap_s": self.cap / SAMPLE_RATE,
                "largest_part_s": self.largest_put / SAMPLE_RATE}
