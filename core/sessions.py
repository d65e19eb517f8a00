"""Writing sessions: runs, and each analysed recording with its derived analytics.

`SessionWriter` is the one way rows get into sessions, channels, segments and frames. It always
writes the analytics (core.derived) in the session's own transaction, so no caller can store a
session without its metrics and alerts, and a crash leaves either all of it or none.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core import derived
from core.labels import LABELS
from core.rules import Rules
from core.store import Connection, Store
from core.times import as_timestamp, utc_now
from core.types import SessionResult

FRAME_COLUMNS = ", ".join(LABELS)
# Deleted child tables first, sessions last.
SESSION_TABLES = ("alerts", "session_metrics", "frames", "segments", "channels", "sessions")

InTransaction = Callable[[Connection, str], None]  # (connection, session_id)


def stored_source(path: str | Path, audio_root: str | Path | None = None) -> str:
    """How a recording's path is stored: absolute, or relative to the audio root when it lies
    inside it (so a moved recordings share needs one setting changed, not every row)."""
    full = Path(os.path.abspath(path))
    if audio_root is not None:
        try:
            return str(full.relative_to(os.path.abspath(audio_root)))
        except ValueError:
            pass
    return str(full)


class SessionWriter:
    def __init__(self, store: Store, rules: Rules, audio_root: str | Path | None = None):
        self.store, self.rules = store, rules
        self.audio_root = audio_root

    # -- runs -----------------------------------------------------------------------------
    def start_run(self, model: str, model_path: str, trained: bool, device: str,
                  engine: str, options: dict) -> str:
        run_id = f"r{utc_now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.store.write() as con:
            con.execute("INSERT INTO runs (run_id, model, model_path, trained, device, engine, "
                        "options, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [run_id, model, model_path, trained, device, engine,
                         json.dumps(options, sort_keys=True), utc_now()])
        return run_id

    def finish_run(self, run_id: str, n_ok: int, n_failed: int, n_skipped: int,
                   audio_s: float) -> None:
        with self.store.write() as con:
            con.execute("UPDATE runs SET finished_at = ?, n_ok = ?, n_failed = ?, n_skipped = ?, "
                        "audio_s = ? WHERE run_id = ?",
                        [utc_now(), n_ok, n_failed, n_skipped, audio_s, run_id])

    # -- sessions -------------------------------------------------------------------------
    def status_of(self, sha256: str) -> str | None:
        """'ok', 'failed' or None for audio with this hash."""
        if not self.store.exists():
            return None
        with self.store.write() as con:  # the writer asks; a read-only open would fight its own lock
            row = con.execute("SELECT status FROM sessions WHERE sha256 = ? "
                              "ORDER BY status = 'ok' DESC LIMIT 1", [sha256]).fetchone()
        return row[0] if row else None

    def already_stored(self, sha256: str) -> bool:
        return self.status_of(sha256) == "ok"

    def save(self, result: SessionResult, run_id: str | None,
             also: InTransaction | None = None) -> bool:
        """Replace everything stored for this session, analytics included, in one transaction.

        A failed result never overwrites a session stored as ok (returns False then): what is
        stored stays whole. `also(con, session_id)` runs last inside the same transaction (the
        worker marks its job done there).
        """
        with self.store.write() as con:
            stored = self._save(con, result, run_id)
            if also is not None:
                also(con, result.session_id)
        return stored

    def _save(self, con: Connection, result: SessionResult, run_id: str | None) -> bool:
        sid = result.session_id
        if result.status != "ok":
            prev = con.execute("SELECT status FROM sessions WHERE session_id = ?",
                               [sid]).fetchone()
            if prev and prev[0] == "ok":
                return False
        delete_session(con, sid)
        m = result.meta
        con.execute(
            "INSERT INTO sessions (session_id, source_path, file_name, sha256, duration_s, "
            "n_channels, codec, sample_rate, status, error, agent_id, customer_id, team, "
            "recorded_at, tags, run_id, ingested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [sid, stored_source(result.source_path, self.audio_root), result.file_name,
             result.sha256, result.duration_s, result.n_channels, result.codec,
             result.sample_rate, result.status, result.error, m.agent_id, m.customer_id,
             m.team, as_timestamp(m.recorded_at), list(m.tags), run_id, utc_now()])
        if result.status != "ok":
            return True
        if result.channels:
            con.executemany(
                "INSERT INTO channels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[sid, c.channel, c.speaker, c.duration_s, c.rms, c.clip_ratio, c.speech_s,
                  list(c.flags)] for c in result.channels])
        if result.segments:
            _insert(con, "segments", _segment_frame(result), (
                "segment_id, session_id, channel, speaker, start_s, end_s, label, confidence, "
                "scores::FLOAT[9], embedding::FLOAT[], rms, clip_ratio, flags, fallback_action"))
        if result.curves:
            frames = pd.concat([
                pd.DataFrame(c.probs.astype(np.float32), columns=LABELS).assign(
                    session_id=sid, channel=c.channel, t_s=c.t_s)
                for c in result.curves], ignore_index=True)
            _insert(con, "frames", frames, f"session_id, channel, t_s, {FRAME_COLUMNS}")
        derived.write_session(con, sid, self.rules)
        return True


def delete_session(con: Connection, session_id: str) -> None:
    """Every row of one session, on the caller's transaction."""
    for table in SESSION_TABLES:
        con.execute(f"DELETE FROM {table} WHERE session_id = ?", [session_id])


def _segment_frame(result: SessionResult) -> pd.DataFrame:
    segs = result.segments
    return pd.DataFrame({
        "segment_id": [s.segment_id for s in segs],
        "session_id": result.session_id,
        "channel": [s.channel for s in segs],
        "speaker": [s.speaker for s in segs],
        "start_s": [s.start_s for s in segs],
        "end_s": [s.end_s for s in segs],
        "label": [s.label for s in segs],
        "confidence": [s.confidence for s in segs],
        "scores": [s.scores.astype(np.float32).tolist() for s in segs],
        "embedding": [s.embedding.astype(np.float32).tolist() for s in segs],
        "rms": [s.rms for s in segs],
        "clip_ratio": [s.clip_ratio for s in segs],
        "flags": [list(s.flags) for s in segs],
        "fallback_action": [s.fallback_action for s in segs],
    })


def _insert(con: Connection, table: str, df: pd.DataFrame, select: str) -> None:
    """INSERT ... SELECT from a registered DataFrame: one bulk statement, not a row loop."""
    con.register("insert_df", df)
    try:
        names = ", ".join(part.strip().split("::")[0] for part in select.split(","))
        con.execute(f"INSERT INTO {table} ({names}) SELECT {select} FROM insert_df")
    finally:
        con.unregister("insert_df")
