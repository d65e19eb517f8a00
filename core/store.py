"""The DuckDB file: the only module that imports duckdb.

`Store` connects, retries while another process holds the file lock, runs transactions and
applies migrations — nothing else (the domain SQL lives in core.sessions, core.derived,
core.queries and core.jobs, next to what it reads or writes). One process writes at a time;
readers open read-only connections per call and never hold one across calls.
"""
from __future__ import annotations

import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

from core.migrations import MIGRATIONS
from core.times import utc_now

DEFAULT_DB = Path("data/emoscope.duckdb")
Connection = duckdb.DuckDBPyConnection


class StoreBusy(Exception):
    """The database stayed locked by another process for the whole retry window."""


def _is_lock_error(e: Exception) -> bool:
    text = str(e).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


class Store:
    def __init__(self, path: str | Path = DEFAULT_DB, retry_s: float = 30.0):
        self.path = Path(path)
        self.retry_s = retry_s
        self.stats = {"retries": 0}

    def _connect(self, read_only: bool) -> Connection:
        deadline = time.monotonic() + self.retry_s
        delay = 0.01
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                if not _is_lock_error(e) or time.monotonic() > deadline:
                    if _is_lock_error(e):
                        raise StoreBusy(f"{self.path} stayed locked for {self.retry_s:.0f} s") from e
                    raise
                self.stats["retries"] += 1
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write connection inside one transaction; rolled back on any error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect(read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        if not self.path.exists():
            raise FileNotFoundError(f"no database at {self.path}; ingest some audio first")
        con = self._connect(read_only=True)
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
        """Apply pending migrations; returns the names applied."""
        applied = []
        with self.write() as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
            done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [name, utc_now()])
                applied.append(name)
        return applied


def arrow_of(rel):
    """A relation's result as an Arrow table (duckdb 2 renamed fetch_arrow_table)."""
    return (getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table)()
