"""Prepare processes: each runs one file's prepare (a generator) at a time and sends what it
yields back through its own pipe.

Started with forkserver (spawn where that is missing), never fork: the parent has loaded torch
and started threads, and a prepare process must not carry either; nor does it run the parent's
main module again (a task must live in an importable module). A process that dies — killed,
out of memory, a crash in a codec — fails only the file it held, with the reason, and a fresh
one takes its place. Each process ignores Ctrl-C (the parent decides how to stop) and leaves
when its pipe closes, so a parent killed outright leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator

from core.base.errors import first_line

Task = Callable[..., Iterator[Any]]  # picklable; sent to each process once, at its start
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _serve(conn: Connection, task: Task) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        tid, args = msg
        try:
            for item in task(*args):
                conn.send(("item", tid, item))
            conn.send(("done", tid, None))
        except (BrokenPipeError, EOFError):
            return
        except Exception as e:  # noqa: BLE001 — reported as this file's reason, process lives on
            try:
                conn.send(("error", tid, f"internal error while preparing: "
                                         f"{type(e).__name__}: {first_line(e)}"))
            except OSError:
                return


@contextlib.contextmanager
def _main_left_behind():
    """Start a process without it running the parent's main module again. multiprocessing
    re-imports `__main__` in every child it starts; a prepare process needs nothing from it
    (its task comes from an importable module), and the main module can be anything — a
    script without a `__name__` guard, or a Streamlit page a test harness left in its place —
    that must not run again in a prepare process."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__} \
        if main is not None else {}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


@dataclass
class _Slot:
    process: Any
    conn: Connection
    task: Any = None  # the id of the task it holds, None when idle


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the prepare process was killed by {name}{hint}"
    return f"the prepare process exited with code {exitcode}"


class PreparePool:
    """`n` processes running `task(*args)`; events come back from `events()`."""

    def __init__(self, n: int, task: Task, preload: tuple[str, ...] = ("ingest.prepare",)):
        methods = mp.get_all_start_methods()
        self.ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        if self.ctx.get_start_method() == "forkserver":
            self.ctx.set_forkserver_preload(list(preload))
        self.task = task
        self.slots = [self._start() for _ in range(max(1, n))]
        self.restarts = 0

    def _start(self) -> _Slot:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_serve, args=(child, self.task), daemon=True,
                                name="emoscope-prepare")
        with _main_left_behind():
            proc.start()
        child.close()
        return _Slot(proc, parent)

    def idle(self) -> list[_Slot]:
        return [s for s in self.slots if s.task is None]

    def busy(self) -> int:
        return sum(s.task is not None for s in self.slots)

    def submit(self, slot: _Slot, tid, args: tuple) -> None:
        slot.task = tid
        try:
            slot.conn.send((tid, args))
        except OSError:
            pass  # it died just now; events() reports it against this task

    def events(self, timeout: float) -> Iterator[tuple[str, Any, Any]]:
        """("item" | "done" | "error" | "died", task id, payload) as they arrive."""
        conns = {s.conn: s for s in self.slots}
        sentinels = {s.process.sentinel: s for s in self.slots}
        for ready in wait(list(conns) + list(sentinels), timeout):
            slot = conns.get(ready) or sentinels.get(ready)
            if ready in conns:
                yield from self._receive(slot)
            elif not slot.process.is_alive():
                yield from self._receive(slot)  # what it sent before dying
                if slot.task is not None:
                    yield "died", slot.task, death_reason(slot.process.exitcode)
                self._replace(slot)

    def _receive(self, slot: _Slot) -> Iterator[tuple[str, Any, Any]]:
        while True:
            try:
                if not slot.conn.poll():
                    return
                kind, tid, payload = slot.conn.recv()
            except (EOFError, OSError):
                return  # a dead process's pipe, possibly cut mid-message
            if kind in ("done", "error"):
                slot.task = None
            yield kind, tid, payload

    def _replace(self, slot: _Slot) -> None:
        slot.conn.close()
        slot.process.join(timeout=1)
        fresh = self._start()
        slot.process, slot.conn, slot.task = fresh.process, fresh.conn, None
        self.restarts += 1

    def cpu_seconds(self) -> float | None:
        """CPU time the live prepare processes have used so far (Linux /proc; None elsewhere)."""
        total = 0.0
        for slot in self.slots:
            try:
                fields = Path(f"/proc/{slot.process.pid}/stat").read_text().rsplit(")", 1)[1]
            except (OSError, IndexError):
                return None
            ticks = fields.split()
            total += (int(ticks[11]) + int(ticks[12])) / _TICKS  # utime + stime
        return total

    def close(self) -> None:
        for s in self.slots:
            try:
                s.conn.send(None)
            except OSError:
                pass
        for s in self.slots:
            s.process.join(timeout=2)
            if s.process.is_alive():
                s.process.terminate()
                s.process.join(timeout=2)
            s.conn.close()
