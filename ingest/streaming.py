"""The streaming executor: the prepare processes, the model and the store all busy at once.

    files ─► prepare processes (N, no torch) ─► segment queue (across files, bounded)
          ─► model (the main thread: batches at the budget) ─► store thread: reduce each
             part, assemble each file, commit finished files in input order, in groups

In this process: a feeder thread hands files to idle prepare processes (never more than
`window` files beyond the last commit) and puts the speech they send into the segment queue;
the main thread takes batches from the queue, runs the model and routes each output back to
its file and part; the store thread turns finished parts into segment rows and curves as they
come, assembles a file once all of it is in, and commits files in input order — as many as are
ready, in one transaction (`SessionWriter.save_many`). Input order makes the run's rows,
analytics included, those of the serial executor. Memory is bounded by the window, the queue's
cap and one commit group, however many files are queued.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.base.errors import first_line
from core.base.names import shown
from core.storage.sessions import SessionWriter
from core.base.types import SessionMeta, SessionResult
from ingest.assemble import CpuShare, analysed, assemble, batch_budget, run_model
from ingest.batching import SegmentQueue, Waiting
from ingest.executors import Batch
from ingest.model import LoadedModel
from ingest.options import IngestOptions
from ingest.report import MODEL_ERRORS, Report, stored_before
from ingest.prepare import Part, Prepared, PrepareTask
from ingest.prepool import PreparePool

GROUP_MAX = 64  # sessions per commit at most


def default_window(workers: int) -> int:
    """Files in flight at most (dispatched, not yet committed)."""
    return max(32, 8 * workers)


def queue_cap_s(budget_s: float) -> float:
    """Audio-seconds the segment queue may hold: a few batches, so the model can pick well."""
    return max(6 * budget_s, 120.0)


def batches_per_call(device: str) -> int:
    """Full batches handed to the model at once: on a GPU the engine queues the next batch
    while the last one's results come back; on CPU one at a time is as fast."""
    return 3 if device.startswith("cuda") else 1


def default_workers() -> int:
    """Every core but one (which the model and the store share), at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass
class _File:
    idx: int
    path: Path
    meta: SessionMeta
    prep: Prepared | None = None
    n_parts: int = 0
    parts: dict = field(default_factory=dict)  # part number → Part (samples until modelled)
    outs: dict = field(default_factory=dict)  # part number → outputs (None until routed)
    missing: dict = field(default_factory=dict)  # part number → outputs still to come
    analysed: dict = field(default_factory=dict)  # part number → Analysed
    received: bool = False  # its prepare process has finished with it
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.received and (self.error is not None or len(self.analysed) == self.n_parts)


def run(batch: Batch) -> None:
    """The streaming executor (registered in ingest/executors.py)."""
    Streaming(batch.writer, batch.lm, batch.opts, batch.force, batch.run_id, batch.report,
              batch.progress, batch.workers).run(batch.files, batch.meta_for)


class Streaming:
    def __init__(self, writer: SessionWriter, lm: LoadedModel, opts: IngestOptions,
                 force: bool, run_id: str, report: Report, progress,
                 workers: int | None = None, window: int | None = None, task=None,
                 group_max: int | None = None):
        self.writer, self.lm, self.opts, self.force = writer, lm, opts, force
        self.run_id, self.report, self.progress = run_id, report, progress
        self.workers = workers or default_workers()
        self.window = window or default_window(self.workers)
        self.task, self.group_max = task, group_max or GROUP_MAX
        self.cv = threading.Condition()
        self.active: dict[int, _File] = {}
        self.ready: list[tuple[int, int]] = []  # (file, part) with every output routed
        self.committed = 0  # files before this index are committed
        self.stop = threading.Event()
        self.crashed: BaseException | None = None
        self.busy_s = {"prepare": 0.0, "model": 0.0, "store": 0.0}
        self.peak_in_flight = 0

    # -- the run -------------------------------------------------------------------------
    def run(self, files: list[Path], meta_for) -> None:
        self.files, self.meta_for = files, meta_for
        n = len(files)
        workers = max(1, min(self.workers, n))
        self.report.workers = workers
        self.progress("start", {"files": n, "executor": "streaming", "workers": workers})
        if not n:
            return
        budget = batch_budget(self.lm, self.opts)
        self.queue = SegmentQueue(budget, cap_s=queue_cap_s(budget))
        task = self.task or PrepareTask(self.opts, None if self.force else
                                        self.writer.known_audio())
        self.started = time.perf_counter()
        self.pool = PreparePool(workers, task)
        threads = [threading.Thread(target=self._guard, args=(fn,), name=name, daemon=True)
                   for fn, name in ((self._feed, "feeder"), (self._store, "store"))]
        try:
            for t in threads:
                t.start()
            with CpuShare(self.lm) as share:
                self.share = share
                self._model_loop(share)
            threads[1].join()
        finally:
            self.stop.set()
            self.queue.close()
            with self.cv:
                self.cv.notify_all()
            self.pool.close()
            for t in threads:
                t.join(timeout=60)  # the store thread finishes the commit it is in
            self._totals(workers)
        if self.crashed is not None:
            raise RuntimeError(f"ingest stopped by an internal error: "
                               f"{type(self.crashed).__name__}: {first_line(self.crashed)}"
                               ) from self.crashed

    def _guard(self, fn) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 — a broken thread stops the run, loudly
            self.crashed = e
            self.stop.set()
            self.queue.close()
            with self.cv:
                self.cv.notify_all()

    def _totals(self, workers: int) -> None:
        wall = max(time.perf_counter() - self.started, 1e-9)
        self.report.busy = self._shares(workers, wall)
        self.report.timings["model"] += self.busy_s["model"]
        self.report.timings["store"] += self.busy_s["store"]
        self.report.peaks = {"files_in_flight": self.peak_in_flight, "window": self.window,
                             **self.queue.stats(), "prepare_restarts": self.pool.restarts}
        share = getattr(self, "share", None)
        if share is not None and share.batches_at:
            self.report.peaks["model_threads"] = dict(sorted(share.batches_at.items()))

    def _shares(self, workers: int, wall: float) -> dict[str, float]:
        return {"prepare": self.busy_s["prepare"] / (workers * wall),
                "model": self.busy_s["model"] / wall, "store": self.busy_s["store"] / wall}

    # -- feeder: files to prepare processes, their speech into the queue ------------------
    def _feed(self) -> None:
        n, nxt = len(self.files), 0
        while not self.stop.is_set():
            for slot in self.pool.idle():
                if nxt >= n or nxt >= self.committed + self.window:
                    break
                path = self.files[nxt]
                f = _File(nxt, path, self.meta_for(path))
                with self.cv:
                    self.active[nxt] = f
                    self.peak_in_flight = max(self.peak_in_flight, len(self.active))
                self.pool.submit(slot, nxt, (path, f.meta))
                nxt += 1
            if nxt >= n and not self.pool.busy():
                break
            for kind, i, payload in self.pool.events(timeout=0.05):
                self._received(self.active[i], kind, payload)
        self.queue.close()

    def _received(self, f: _File, kind: str, payload) -> None:
        if kind == "item" and isinstance(payload, Part):
            k = f.n_parts
            with self.cv:
                f.n_parts += 1
                f.parts[k], f.outs[k] = payload, [None] * len(payload.spans)
                f.missing[k] = len(payload.spans)
            self.queue.put((f.idx, k), payload.waves)
            return
        with self.cv:
            if kind == "item":
                f.prep = payload
                self.report.timings["decode"] += payload.timings.get("decode", 0.0)
                self.report.timings["vad"] += payload.timings.get("vad", 0.0)
                self.busy_s["prepare"] += sum(payload.timings.values())
            elif kind == "done":
                f.received = True
            else:  # error or died: only this file fails
                f.error, f.received = payload, True
            self.cv.notify_all()
        if f.error is not None:
            self.queue.drop(f.idx)

    # -- the model: batches across files, outputs back to their files ---------------------
    def _model_loop(self, share: CpuShare) -> None:
        per_call = batches_per_call(self.lm.device)
        while not self.stop.is_set():
            batch = self.queue.take(timeout=0.5, max_batches=per_call)
            if batch is None:
                return
            if batch:
                share.fit(self._prepare_cores())
                t = time.perf_counter()
                outs = self._infer(batch)
                self.busy_s["model"] += time.perf_counter() - t
                self._route(batch, outs)

    def _prepare_cores(self) -> int:
        """How many cores the prepare processes have kept busy lately (CPU time over wall time
        since the last batch); the model's CPU threads get the rest. Where the processes' CPU
        time cannot be read: those holding a file."""
        used, now = self.pool.cpu_seconds(), time.perf_counter()
        if used is None:
            return self.pool.busy()
        last = getattr(self, "_cpu_mark", None)
        self._cpu_mark = (used, now)
        if last is None or used < last[0] or now - last[1] < 1e-3:
            return self.pool.busy()  # the first batch, or a process was replaced
        # A share of a core is a core taken: a thread more than the free cores stalls the rest.
        return math.ceil((used - last[0]) / (now - last[1]) - 0.1)

    def _infer(self, batch: list[Waiting]) -> list:
        try:
            return run_model(self.lm, [w.wave for w in batch], self.opts)
        except MODEL_ERRORS as e:
            owners = {w.key[0] for w in batch}
            if len(owners) == 1:
                self._fail(owners.pop(), f"model failed: {first_line(e)}")
                return [None] * len(batch)
        # Several files shared the batch: each alone, so a failure is only its own file's.
        outs: list = [None] * len(batch)
        for owner in sorted({w.key[0] for w in batch}):
            idx = [i for i, w in enumerate(batch) if w.key[0] == owner]
            try:
                for i, o in zip(idx, run_model(self.lm, [batch[i].wave for i in idx], self.opts)):
                    outs[i] = o
            except MODEL_ERRORS as e:
                self._fail(owner, f"model failed: {first_line(e)}")
        return outs

    def _fail(self, idx: int, reason: str) -> None:
        with self.cv:
            f = self.active.get(idx)
            if f is not None and f.error is None:
                f.error = reason
            self.cv.notify_all()
        self.queue.drop(idx)

    def _route(self, batch: list[Waiting], outs: list) -> None:
        with self.cv:
            for w, o in zip(batch, outs):
                f = self.active.get(w.key[0])
                if o is None or f is None or f.error is not None:
                    continue
                part = w.key[1]
                f.outs[part][w.index] = o
                f.missing[part] -= 1
                if not f.missing[part]:
                    self.ready.append((f.idx, part))
            self.cv.notify_all()

    # -- store: reduce parts, assemble files, commit in input order ------------------------
    def _store(self) -> None:
        n, nxt, group = len(self.files), 0, []
        while nxt < n:
            with self.cv:
                while not self.stop.is_set() and not self.ready and not (
                        nxt in self.active and self.active[nxt].complete):
                    self.cv.wait(0.1)
                if self.stop.is_set():
                    return
                ready, self.ready = self.ready, []
            t = time.perf_counter()
            for i, k in ready:
                self._reduce(i, k)
            while nxt < n and len(group) < self.group_max:
                with self.cv:
                    f = self.active.get(nxt)
                    if f is None or not f.complete:
                        break
                    del self.active[nxt]
                group.append(self._result(f, group))
                nxt += 1
            self.busy_s["store"] += time.perf_counter() - t
            with self.cv:
                more = nxt < n and nxt in self.active and self.active[nxt].complete
            if group and (not more or len(group) >= self.group_max):
                self._commit(group)
                group = []
                self.committed = nxt

    def _reduce(self, i: int, k: int) -> None:
        """A part whose outputs are all in → segment rows and curves; its samples go."""
        with self.cv:
            f = self.active.get(i)
            if f is None or f.error is not None:
                return
            part, outs = f.parts[k], f.outs.pop(k)
        done = analysed(part, outs, self.opts)
        part.release()
        with self.cv:
            f.analysed[k] = done

    def _result(self, f: _File, group: list) -> tuple[str, SessionResult | None, str | None]:
        prep = f.prep
        if prep is None and f.error is None:
            f.error = "the prepare process ended without a summary of the file"
        note = "; ".join(prep.notes) if prep is not None and prep.notes else None
        if f.error is not None:
            sha = prep.sha256 if prep is not None else ""
            result = SessionResult.failed(f.path, sha, f.meta, f.error)
        elif prep.skipped:
            result = None
        else:
            result = assemble(prep, [f.analysed[k] for k in range(f.n_parts)])
            if stored_before(self.writer, result, self.force) or (
                    not self.force and result.status == "ok" and any(
                        r is not None and r.status == "ok" and r.sha256 == result.sha256
                        for _, r, _ in group)):
                result = None
        return shown(f.path), result, note

    def _commit(self, group: list[tuple[str, SessionResult | None, str | None]]) -> None:
        t = time.perf_counter()
        results = [r for _, r, _ in group if r is not None and r.sha256]
        try:
            self.writer.save_many(results, self.run_id)
        except Exception:  # noqa: BLE001 — find the session that cannot be stored; keep the rest
            group = [(p, self._save_alone(r), n) if r is not None and r.sha256 else (p, r, n)
                     for p, r, n in group]
        self.busy_s["store"] += time.perf_counter() - t
        for path, result, note in group:
            status = self.report.add(path, result, note)
            self.progress("file", {"path": path, "status": status, "note": note,
                                   "error": result.error if result is not None else None,
                                   "audio_s": result.duration_s if result is not None else 0.0})
        wall = max(time.perf_counter() - self.started, 1e-9)
        self.progress("busy", self._shares(self.report.workers, wall))

    def _save_alone(self, result: SessionResult) -> SessionResult:
        try:
            self.writer.save(result, self.run_id)
            return result
        except Exception as e:  # noqa: BLE001
            return SessionResult.failed(result.source_path, result.sha256, result.meta,
                                        f"could not be stored: {type(e).__name__}: "
                                        f"{first_line(e)}")
