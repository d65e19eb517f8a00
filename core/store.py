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
                con.execute("INSERT INTO segments (segment_id, session_id, channel, speaker, "
                            "start_s, end_s, label, confidence, scores, embedding, rms, "
                            "clip_ratio, flags, fallback_action) "
                            "SELECT segment_id, session_id, channel, speaker, start_s, end_s, "
                            "label, confidence, "
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
        for table in ("alerts", "session_metrics", "frames", "segments", "channels", "sessions"):
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

    def find_sessions(self, session_ids: list[str] | None = None, agent: str | None = None,
                      person: str | None = None, team: str | None = None,
                      since: str | None = None, until: str | None = None) -> pd.DataFrame:
        """Analysed sessions matching every filter given (until is exclusive), oldest first."""
        where, params = _filters((("agent_id", agent), ("customer_id", person), ("team", team)),
                                 "coalesce(recorded_at, ingested_at)", since, until)
        where.append("status = 'ok'")
        if session_ids:
            where.append("list_contains(?, session_id)")
            params.append(list(session_ids))
        return self.query(
            "SELECT session_id, file_name, coalesce(recorded_at, ingested_at) AS \"when\", "
            "duration_s, agent_id, customer_id, team FROM sessions WHERE "
            + " AND ".join(where) + " ORDER BY \"when\", session_id", params)

    def runs(self) -> pd.DataFrame:
        return self.query("SELECT * FROM runs ORDER BY started_at")

    def embedding_matrix(self, session_ids: list[str] | None = None,
                         dim: int | None = None) -> tuple[pd.DataFrame, np.ndarray, int]:
        """Every segment's metadata (core.search.META_COLUMNS) and embedding as one matrix,
        or only those of `session_ids`.

        Read through Arrow: a list column turned into Python lists row by row would take
        minutes at 500k segments. Embeddings of a dimension other than `dim` (default: the most
        common one; another model) are left out; returns (meta, (N, D) float32, how many were
        left out).
        """
        only = "" if session_ids is None else \
            "AND g.session_id IN (SELECT session_id FROM wanted_ids) "
        sql = ("SELECT g.segment_id, g.session_id, g.speaker, g.label, g.confidence, g.start_s, "
               "g.end_s, s.team, coalesce(s.recorded_at, s.ingested_at) AS \"when\", "
               "g.embedding FROM segments g JOIN sessions s USING (session_id) "
               f"WHERE g.embedding IS NOT NULL {only}"
               "ORDER BY g.session_id, g.start_s, g.channel")
        with self.read() as con:
            if session_ids is not None:
                con.register("wanted_ids", pd.DataFrame({"session_id": list(session_ids)},
                                                        dtype=object))
            rel = con.sql(sql)
            # duckdb 2 renamed fetch_arrow_table to to_arrow_table
            table = (getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table)()
        emb = table.column("embedding").combine_chunks()
        meta = table.drop_columns(["embedding"]).to_pandas()
        if len(emb) == 0:
            return meta, np.zeros((0, 0), np.float32), 0
        lengths = emb.value_lengths().to_numpy(zero_copy_only=False)
        dim = dim or int(np.bincount(lengths).argmax())
        values = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if (lengths == dim).all():
            return meta, values.reshape(len(lengths), dim), 0
        keep = lengths == dim
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[keep]
        matrix = values[starts[:, None] + np.arange(dim)[None, :]]
        return meta[keep].reset_index(drop=True), matrix, int((~keep).sum())

    # -- analytics: session_metrics, alerts, segments.rolling_volatility ---------------------
    # Derived rows come from core.analytics; this section only moves them in and out of SQL.
    _SEG_COLUMNS = ("segment_id, session_id, channel, speaker, start_s, end_s, label, "
                    "confidence, scores, embedding, flags")

    def analytics_rules(self):
        """The rules derived rows are computed with (emoscope.toml over the defaults)."""
        if getattr(self, "_analytics_rules", None) is None:
            from core.rules import load_rules
            self._analytics_rules = load_rules()
        return self._analytics_rules

    def use_rules(self, rules) -> None:
        self._analytics_rules = rules

    def write_derived(self, con: duckdb.DuckDBPyConnection, session_id: str) -> None:
        """The `derived` hook of save_session: analytics for one session, same transaction.

        The volatility reference is every ok session ingested before this one, as in recompute.
        """
        from core.analytics import Reference, analyze
        row = con.execute("SELECT duration_s, ingested_at FROM sessions "
                          "WHERE session_id = ? AND status = 'ok'", [session_id]).fetchone()
        if row is None:
            return
        duration_s, ingested_at = row
        seg = con.execute(f"SELECT {self._SEG_COLUMNS} FROM segments WHERE session_id = ?",
                          [session_id]).df()
        ch = con.execute("SELECT channel, speaker, flags FROM channels WHERE session_id = ? "
                         "ORDER BY channel", [session_id]).df()
        ref = con.execute(
            "SELECT m.speaker, m.volatility FROM session_metrics m JOIN sessions s "
            "USING (session_id) WHERE s.status = 'ok' AND m.volatility IS NOT NULL "
            "AND (s.ingested_at < ? OR (s.ingested_at = ? AND s.session_id < ?))",
            [ingested_at, ingested_at, session_id]).df()
        a = analyze(session_id, seg, ch, duration_s, self.analytics_rules(),
                    Reference.from_rows(ref).values)
        self._write_analysis(con, [session_id], a.metrics, a.alerts, a.segments)

    @staticmethod
    def _write_analysis(con: duckdb.DuckDBPyConnection, session_ids: list[str],
                        metrics: pd.DataFrame, alerts: pd.DataFrame,
                        segments: pd.DataFrame) -> None:
        from core.alerts import ALERT_COLUMNS
        from core.metrics import METRIC_COLUMNS
        ids = pd.DataFrame({"session_id": session_ids})
        con.register("ids_df", ids)
        for table in ("session_metrics", "alerts"):
            con.execute(f"DELETE FROM {table} WHERE session_id IN (SELECT session_id FROM ids_df)")
        con.unregister("ids_df")
        for table, df, cols in (("session_metrics", metrics, METRIC_COLUMNS),
                                ("alerts", alerts, ALERT_COLUMNS)):
            if len(df):
                names = ", ".join(cols)
                con.register("derived_df", df[cols])
                con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM derived_df")
                con.unregister("derived_df")
        if len(segments):
            con.register("seg_upd", segments[["segment_id", "rolling_volatility",
                                              "fallback_action"]])
            con.execute("UPDATE segments SET rolling_volatility = u.rolling_volatility, "
                        "fallback_action = u.fallback_action FROM seg_upd u "
                        "WHERE segments.segment_id = u.segment_id")
            con.unregister("seg_upd")

    def recompute(self, progress=None, rules=None, chunk: int = 250) -> dict:
        """Rebuild session_metrics, alerts and per-segment values for every ok session.

        Sessions are processed in ingest order so the store-relative rules see the same
        earlier sessions they saw at ingest; one transaction, so readers never see half of it.
        `progress(done, total)` is called after each chunk.
        """
        from core.alerts import ALERT_COLUMNS
        from core.analytics import Reference, analyze_rows
        from core.metrics import METRIC_COLUMNS
        if rules is not None:
            self.use_rules(rules)
        rules = self.analytics_rules()
        self.migrate()
        t0 = time.perf_counter()
        n_alerts = 0
        with self.write() as con:
            sessions = con.execute("SELECT session_id, duration_s FROM sessions "
                                   "WHERE status = 'ok' ORDER BY ingested_at, session_id").df()
            con.execute("DELETE FROM session_metrics")
            con.execute("DELETE FROM alerts")
            con.execute("UPDATE segments SET rolling_volatility = NULL")
            ref = Reference()
            total = len(sessions)
            for lo in range(0, total, chunk):
                part = sessions.iloc[lo:lo + chunk]
                con.register("ids_df", part[["session_id"]])
                seg = con.execute(f"SELECT {self._SEG_COLUMNS} FROM segments "
                                  "WHERE session_id IN (SELECT session_id FROM ids_df) "
                                  "ORDER BY session_id").df()
                ch = con.execute("SELECT session_id, channel, speaker, flags FROM channels "
                                 "WHERE session_id IN (SELECT session_id FROM ids_df) "
                                 "ORDER BY session_id, channel").df()
                con.unregister("ids_df")
                seg_at, ch_at = _row_ranges(seg.session_id), _row_ranges(ch.session_id)
                metrics, updates, alerts = [], [], []
                for sid, dur in zip(part.session_id, part.duration_s):
                    rows, upd, al = analyze_rows(
                        sid, seg.iloc[slice(*seg_at.get(sid, (0, 0)))],
                        ch.iloc[slice(*ch_at.get(sid, (0, 0)))], dur, rules, ref.values)
                    ref.add(rows)
                    metrics += rows
                    updates.append(upd)
                    alerts += al
                n_alerts += len(alerts)
                self._write_analysis(con, part.session_id.tolist(),
                                     pd.DataFrame(metrics, columns=METRIC_COLUMNS),
                                     pd.DataFrame(alerts, columns=ALERT_COLUMNS),
                                     pd.concat(updates, ignore_index=True))
                if progress is not None:
                    progress(min(lo + chunk, total), total)
        return {"sessions": total, "alerts": n_alerts, "rules": rules.digest,
                "seconds": time.perf_counter() - t0}

    def session_metrics(self, session_id: str | None = None) -> pd.DataFrame:
        """session_metrics rows with each session's metadata (agent, customer, team, dates)."""
        sql = ("SELECT m.*, s.agent_id, s.customer_id, s.team, s.recorded_at, s.ingested_at, "
               "s.duration_s, s.file_name FROM session_metrics m JOIN sessions s "
               "USING (session_id)")
        params: list = []
        if session_id is not None:
            sql += " WHERE m.session_id = ?"
            params = [session_id]
        return self.query(sql + " ORDER BY s.recorded_at, m.session_id, m.speaker = 'all', "
                          "m.speaker", params)

    def alerts(self, session_id: str | None = None, speaker: str | None = None,
               rule: str | None = None, severity: str | None = None,
               since: str | None = None, until: str | None = None) -> pd.DataFrame:
        """Alerts with session metadata; every filter optional; since/until on the session date
        (recorded_at, else ingested_at), until exclusive."""
        where, params = _filters((("a.session_id", session_id), ("a.speaker", speaker),
                                  ("a.rule", rule), ("a.severity", severity)),
                                 "coalesce(s.recorded_at, s.ingested_at)", since, until)
        sql = ("SELECT a.*, s.agent_id, s.customer_id, s.team, s.recorded_at, s.ingested_at, "
               "s.file_name FROM alerts a JOIN sessions s USING (session_id)")
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.query(sql + " ORDER BY coalesce(s.recorded_at, s.ingested_at) DESC, "
                          "a.session_id, a.t_s, a.speaker, a.rule", params)

    def aggregates(self, by: str = "agent", period: str = "week",
                   speaker: str = "all") -> pd.DataFrame:
        """Per agent / team / customer by day / week: see core.aggregates.aggregate."""
        from core.aggregates import aggregate
        return aggregate(self.session_metrics(), self.alerts(), by, period, speaker)

    def baselines(self) -> pd.DataFrame:
        """Each person's baseline and how far their latest session departs from it."""
        from core.aggregates import person_baselines
        return person_baselines(self.session_metrics(), self.analytics_rules())

    def person_sessions(self) -> pd.DataFrame:
        """(person, session) rows behind the baselines: mix, negative share, volatility."""
        from core.aggregates import person_sessions
        return person_sessions(self.session_metrics())



def _row_ranges(keys: pd.Series) -> dict[str, tuple[int, int]]:
    """(first, end) row of each key in a column sorted by that key."""
    values = keys.to_numpy()
    if len(values) == 0:
        return {}
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(values)]])
    return {values[a]: (int(a), int(b)) for a, b in zip(starts, ends)}

def _filters(equal: tuple, date_expr: str, since: str | None,
             until: str | None) -> tuple[list[str], list]:
    """WHERE clauses and parameters: `col = ?` for each value given, since ≤ date < until."""
    where, params = [], []
    for col, val in equal:
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    for op, val in ((">=", since), ("<", until)):
        if val is not None:
            where.append(f"{date_expr} {op} ?")
            params.append(_timestamp(val))
    return where, params


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return pd.Timestamp(value).to_pydatetime().replace(tzinfo=None)
    except (ValueError, TypeError):
        return None
