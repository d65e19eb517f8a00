"""The DuckDB store: the only module that imports duckdb.

One writer at a time, short transactions, retry while another process holds the file lock.
Readers open read-only connections per call and never hold one across calls.
"""
from __future__ import annotations

import json
import random
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pandas as pd

from core.labels import LABELS
from core.migrations import MIGRATIONS
from core.types import SessionResult

DEFAULT_DB = Path("data/emoscope.duckdb")
FRAME_COLUMNS = ", ".join(LABELS)


class StoreBusy(Exception):
    """The database stayed locked by another process for the whole retry window."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_lock_error(e: Exception) -> bool:
    text = str(e).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


class Store:
    def __init__(self, path: str | Path = DEFAULT_DB, retry_s: float = 30.0):
        self.path = Path(path)
        self.retry_s = retry_s
        self.stats = {"retries": 0}

    # -- connections --------------------------------------------------------------------
    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
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
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
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
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.path.exists():
            raise FileNotFoundError(f"no database at {self.path}; ingest some audio first")
        con = self._connect(read_only=True)
        try:
            yield con
        finally:
            con.close()

    def exists(self) -> bool:
        return self.path.exists()

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        applied = []
        with self.write() as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
            done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [name, _now()])
                applied.append(name)
        return applied

    # -- runs -----------------------------------------------------------------------------
    def start_run(self, model: str, model_path: str, trained: bool, device: str,
                  engine: str, options: dict) -> str:
        run_id = f"r{_now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.write() as con:
            con.execute("INSERT INTO runs (run_id, model, model_path, trained, device, engine, "
                        "options, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [run_id, model, model_path, trained, device, engine,
                         json.dumps(options, sort_keys=True), _now()])
        return run_id

    def finish_run(self, run_id: str, n_ok: int, n_failed: int, n_skipped: int,
                   audio_s: float) -> None:
        with self.write() as con:
            con.execute("UPDATE runs SET finished_at = ?, n_ok = ?, n_failed = ?, n_skipped = ?, "
                        "audio_s = ? WHERE run_id = ?",
                        [_now(), n_ok, n_failed, n_skipped, audio_s, run_id])

    # -- sessions -------------------------------------------------------------------------
    def status_of(self, sha256: str) -> str | None:
        """'ok', 'failed' or None for audio with this hash."""
        if not self.exists():
            return None
        with self.write() as con:  # the writer asks; a read-only open would fight its own lock
            row = con.execute("SELECT status FROM sessions WHERE sha256 = ? "
                              "ORDER BY status = 'ok' DESC LIMIT 1", [sha256]).fetchone()
        return row[0] if row else None

    def save_session(self, result: SessionResult, run_id: str | None,
                     derived: callable | None = None) -> None:
        """Replace everything stored for this session in one transaction.

        A failed result never overwrites a session stored as ok: what is stored stays whole.
        `derived(con, session_id)` lets analytics write its tables inside the same transaction.
        """
        sid = result.session_id
        with self.write() as con:
            if result.status != "ok":
                prev = con.execute("SELECT status FROM sessions WHERE session_id = ?",
                                   [sid]).fetchone()
                if prev and prev[0] == "ok":
                    return
            self._delete(con, sid)
            m = result.meta
            con.execute(
                "INSERT INTO sessions (session_id, source_path, file_name, sha256, duration_s, "
                "n_channels, codec, sample_rate, status, error, agent_id, customer_id, team, "
                "recorded_at, tags, run_id, ingested_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [sid, result.source_path, result.file_name, result.sha256, result.duration_s,
                 result.n_channels, result.codec, result.sample_rate, result.status,
                 result.error, m.agent_id, m.customer_id, m.team, _timestamp(m.recorded_at),
                 list(m.tags), run_id, _now()])
            if result.status != "ok":
                return
            if result.channels:
                con.executemany(
                    "INSERT INTO channels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [[sid, c.channel, c.speaker, c.duration_s, c.rms, c.clip_ratio, c.speech_s,
                      list(c.flags)] for c in result.channels])
            if result.segments:
                seg = pd.DataFrame({
                    "segment_id": [s.segment_id for s in result.segments],
                    "session_id": sid,
                    "channel": [s.channel for s in result.segments],
                    "speaker": [s.speaker for s in result.segments],
                    "start_s": [s.start_s for s in result.segments],
                    "end_s": [s.end_s for s in result.segments],
                    "label": [s.label for s in result.segments],
                    "confidence": [s.confidence for s in result.segments],
                    "scores": [s.scores.astype(np.float32).tolist() for s in result.segments],
                    "embedding": [s.embedding.astype(np.float32).tolist()
                                  for s in result.segments],
                    "rms": [s.rms for s in result.segments],
                    "clip_ratio": [s.clip_ratio for s in result.segments],
                    "flags": [list(s.flags) for s in result.segments],
                    "fallback_action": [s.fallback_action for s in result.segments],
                })
                con.register("seg_df", seg)
                con.execute("INSERT INTO segments SELECT segment_id, session_id, channel, "
                            "speaker, start_s, end_s, label, confidence, "
                            "scores::FLOAT[9], embedding::FLOAT[], rms, clip_ratio, flags, "
                            "fallback_action FROM seg_df")
                con.unregister("seg_df")
            if result.curves:
                frames = pd.concat([
                    pd.DataFrame(c.probs.astype(np.float32), columns=LABELS).assign(
                        session_id=sid, channel=c.channel, t_s=c.t_s)
                    for c in result.curves], ignore_index=True)
                con.register("frame_df", frames)
                con.execute(f"INSERT INTO frames SELECT session_id, channel, t_s, {FRAME_COLUMNS} "
                            "FROM frame_df")
                con.unregister("frame_df")
            if derived is not None:
                derived(con, sid)

    @staticmethod
    def _delete(con: duckdb.DuckDBPyConnection, sid: str) -> None:
        for table in ("frames", "segments", "channels", "sessions"):
            con.execute(f"DELETE FROM {table} WHERE session_id = ?", [sid])

    # -- reads ----------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run one parameterized read-only query and return a DataFrame."""
        with self.read() as con:
            return con.execute(sql, params or []).df()

    def counts(self) -> dict[str, int]:
        with self.read() as con:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("sessions", "segments", "frames", "runs", "channels")}

    def sessions(self) -> pd.DataFrame:
        return self.query("SELECT * FROM sessions ORDER BY recorded_at, session_id")

    def segments(self, session_id: str) -> pd.DataFrame:
        return self.query("SELECT * EXCLUDE (embedding) FROM segments WHERE session_id = ? "
                          "ORDER BY start_s, channel", [session_id])

    def frames(self, session_id: str) -> pd.DataFrame:
        return self.query("SELECT * FROM frames WHERE session_id = ? ORDER BY channel, t_s",
                          [session_id])

    def embeddings(self, session_ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        sql = "SELECT segment_id, embedding FROM segments"
        params: list = []
        if session_ids is not None:
            sql += " WHERE list_contains(?, session_id)"
            params = [session_ids]
        df = self.query(sql + " ORDER BY segment_id", params)
        if df.empty:
            return [], np.zeros((0, 0), np.float32)
        return df.segment_id.tolist(), np.stack(df.embedding.to_numpy()).astype(np.float32)

    def runs(self) -> pd.DataFrame:
        return self.query("SELECT * FROM runs ORDER BY started_at")


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return pd.Timestamp(value).to_pydatetime().replace(tzinfo=None)
    except (ValueError, TypeError):
        return None
