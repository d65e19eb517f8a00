"""The DuckDB file: the only module that imports duckdb.

`Store` connects, retries while another process holds the file lock, runs transactions and
applies migrations — nothing else (the domain SQL lives in core.storage.sessions, core.storage.derived,
core.storage.queries and core.intake.jobs, next to what it reads or writes). One process writes at a time;
readers open read-only connections per call and never hold one across calls.

DuckDB lets a read-write connection in only while no read-only one is open, so busy readers
could keep a writer out for long stretches. A gate file beside the database gives the writer
priority: a writer holds it exclusively from before it connects until it has closed, and a
reader passes through it (shared, released at once) before connecting. Readers already
inside finish their short read; new ones wait at the gate until the write is done.
"""
from __future__ import annotations

import fcntl
import os
import random
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pandas as pd

from core.storage import analysers
from core.base import places
from core.storage.migrations import MIGRATIONS
from core.base.private import private_dir, tighten
from core.base.times import utc_now

DEFAULT_DB = Path("data/emoscope.duckdb")
Connection = duckdb.DuckDBPyConnection


def file_version(path: Path) -> tuple:
    """Changes whenever a writer commits or the file is replaced (a compaction renames a fresh
    copy over it): the file's and its write-ahead log's inode, time and size. What every cache
    of a reading (dashboard reads, the word and similarity indexes' checks) is keyed by."""
    out: list[int] = []
    for p in (path, places.beside(path, places.WAL, resolve=False)):
        try:
            st = os.stat(p)
            out += [st.st_ino, st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            out += [0, 0, 0]
    return tuple(out)


class StoreBusy(Exception):
    """The database stayed locked by another process for the whole retry window."""


def _is_lock_error(e: Exception) -> bool:
    text = str(e).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


class _Wait:
    """One wait for the database: whether it has run out (never, when `retry_s` is None) and
    the notes told along the way."""

    def __init__(self, store: "Store"):
        self.store = store
        self.started = self.noted = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def give_up(self) -> StoreBusy | None:
        retry_s = self.store.retry_s
        if retry_s is not None and self.seconds > retry_s:
            return StoreBusy(f"{self.store.path} stayed locked for {retry_s:.0f} s")
        if self.store.on_wait is not None and time.monotonic() - self.noted >= self.store.WAIT_NOTE_S:
            self.noted = time.monotonic()
            self.store.on_wait(self.seconds)
        return None


class Store:
    """`retry_s`: how long to wait for another process's lock before StoreBusy; None waits as
    long as it takes (the ingest run and the worker: the writer never gives up), calling
    `on_wait(seconds waited)` every WAIT_NOTE_S so the wait can be told."""

    WAIT_NOTE_S = 10.0

    def __init__(self, path: str | Path = DEFAULT_DB, retry_s: float | None = 30.0,
                 writer_first: bool = True, on_wait: Callable[[float], None] | None = None):
        self.path = Path(path)
        self.retry_s = retry_s
        self.writer_first = writer_first  # False only to measure what the gate is for (bench/)
        self.on_wait = on_wait
        self.stats = {"retries": 0}

    @property
    def gate_path(self) -> Path:
        return places.beside(self.path, places.GATE, resolve=False)

    def _gate_fd(self, create: bool) -> int | None:
        if not self.writer_first:
            return None
        try:
            if create:
                return os.open(self.gate_path, os.O_RDWR | os.O_CREAT, 0o600)
            return os.open(self.gate_path, os.O_RDONLY)
        except OSError:  # e.g. a read-only folder: readers then go without the gate
            return None

    def _take(self, fd: int, how: int, wait: _Wait) -> None:
        while True:
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if (busy := wait.give_up()) is not None:
                    raise busy from None
                time.sleep(0.002 if wait.seconds < 30 else 0.1)

    def _connect(self, read_only: bool, wait: _Wait, gated: bool = False) -> Connection:
        delay = 0.002 if gated else 0.01
        while True:
            if read_only:  # wait at the gate while a writer is in or waiting
                fd = self._gate_fd(create=False)
                if fd is not None:
                    try:
                        self._take(fd, fcntl.LOCK_SH, wait)
                    finally:
                        os.close(fd)
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                if not _is_lock_error(e):
                    raise
                if (busy := wait.give_up()) is not None:
                    raise busy from e
                self.stats["retries"] += 1
                time.sleep(delay * (0.5 + random.random()))
                # A writer holding the gate waits only for readers already inside: poll fast;
                # a hold that lasts (another process's writer) is polled ever more slowly.
                delay = min(delay * 2, (0.02 if gated else 0.5) if wait.seconds < 30 else 5.0)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write connection inside one transaction; rolled back on any error."""
        created = not self.path.exists()
        if not self.path.parent.exists():
            private_dir(self.path.parent)
        with self._exclusive() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        if created:
            tighten(self.path)

    def compact(self) -> dict | None:
        """Copy the database into a fresh file and put it in place of this one.

        DuckDB does not clear what it frees: a deleted row's values stay in the file's free
        blocks (CHECKPOINT and VACUUM reuse them, never wipe them), where `grep -a` finds them.
        Erasure therefore ends here: the fresh file holds only live rows (COPY FROM DATABASE
        keeps the schema, keys and indexes). The copy is made from a read-only connection, so
        readers go on meanwhile; then, under the writer's gate and lock, the file is checked
        unchanged since and renamed over (readers already inside finish on the old file, gone
        once they close). Returns the sizes and seconds it took, or None when another process
        wrote meanwhile (the copy is dropped: compact again)."""
        started = time.perf_counter()
        with self._exclusive() as con:  # the WAL into the file, so the file alone is the store
            con.execute("CHECKPOINT")
        before = self._signature()
        fresh = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.compact")
        try:
            with self.read() as con:
                name = con.execute("SELECT current_database()").fetchone()[0]
                target = str(fresh).replace("'", "''")
                con.execute(f"ATTACH '{target}' AS compact_target (READ_ONLY false)")
                con.execute(f'COPY FROM DATABASE "{name}" TO compact_target')
                con.execute("DETACH compact_target")
            fd = os.open(fresh, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            tighten(fresh)
            with self._exclusive():
                if self._signature() != before:
                    return None
                os.replace(fresh, self.path)
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        finally:
            for f in (fresh, places.beside(fresh, places.WAL, resolve=False)):
                f.unlink(missing_ok=True)
        return {"bytes_before": before[0], "bytes_after": self.path.stat().st_size,
                "seconds": time.perf_counter() - started}

    def _signature(self) -> tuple:
        st = self.path.stat()
        wal = places.beside(self.path, places.WAL, resolve=False)
        return st.st_size, st.st_mtime_ns, st.st_ino, wal.exists() and wal.stat().st_size

    @contextmanager
    def _exclusive(self) -> Iterator[Connection]:
        """The writer's gate and a read-write connection outside any transaction."""
        wait = _Wait(self)
        gate = self._gate_fd(create=True)
        try:
            if gate is not None:
                self._take(gate, fcntl.LOCK_EX, wait)
            con = self._connect(read_only=False, wait=wait, gated=gate is not None)
            try:
                yield con
            finally:
                con.close()
        finally:
            if gate is not None:
                os.close(gate)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        if not self.path.exists():
            raise FileNotFoundError(f"no database at {self.path}; ingest some audio first")
        con = self._connect(read_only=True, wait=_Wait(self))
        try:
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """One parameterized read-only query as a DataFrame."""
        with self.read() as con:
            return con.execute(sql, params or []).df()

    def exists(self) -> bool:
        return self.path.exists()

    def migrate(self) -> list[str]:
        """Apply pending migrations (and make the file and its WAL private); returns the names
        applied."""
        applied = []
        with self.write() as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
            done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
            # Core's, then those of the analysers registered in this process.
            for name, sql in [*MIGRATIONS, *analysers.migrations()]:
                if name in done:
                    continue
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [name, utc_now()])
                applied.append(name)
        for p in (self.path, places.beside(self.path, places.WAL, resolve=False), self.gate_path):
            tighten(p)
        return applied


def arrow_of(rel):
    """A relation's result as an Arrow table (duckdb 2 renamed fetch_arrow_table)."""
    return (getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table)()
