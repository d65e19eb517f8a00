"""Analytics rows derived from stored segments: session_metrics, alerts and per-segment
rolling volatility and fallback action. Written with each session (SessionWriter calls
`write_session` inside the session's transaction) and rebuilt whole by `recompute`.

The computation lives in core.analytics; this module only moves rows in and out of SQL.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from core.alerts import ALERT_COLUMNS
from core.analytics import Reference, analyze, analyze_rows
from core.metrics import METRIC_COLUMNS
from core.rules import Rules
from core.store import Connection, Store

SEGMENT_COLUMNS = ("segment_id, session_id, channel, speaker, start_s, end_s, label, "
                   "confidence, scores, embedding, flags")


def write_session(con: Connection, session_id: str, rules: Rules) -> None:
    """Analytics for one stored session, on the caller's connection and transaction.

    The volatility reference is every ok session ingested before this one, as in recompute.
    """
    row = con.execute("SELECT duration_s, ingested_at, team, tags FROM sessions "
                      "WHERE session_id = ? AND status = 'ok'", [session_id]).fetchone()
    if row is None:
        return
    duration_s, ingested_at, team, tags = row
    seg = con.execute(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE session_id = ?",
                      [session_id]).df()
    ch = con.execute("SELECT channel, speaker, flags FROM channels WHERE session_id = ? "
                     "ORDER BY channel", [session_id]).df()
    ref = con.execute(
        "SELECT m.speaker, m.volatility FROM session_metrics m JOIN sessions s "
        "USING (session_id) WHERE s.status = 'ok' AND m.volatility IS NOT NULL "
        "AND (s.ingested_at < ? OR (s.ingested_at = ? AND s.session_id < ?))",
        [ingested_at, ingested_at, session_id]).df()
    a = analyze(session_id, seg, ch, duration_s, rules.for_session(team, tags),
                Reference.from_rows(ref).values)
    _write(con, [session_id], a.metrics, a.alerts, a.segments)


def _write(con: Connection, session_ids: list[str], metrics: pd.DataFrame,
           alerts: pd.DataFrame, segments: pd.DataFrame) -> None:
    con.register("ids_df", pd.DataFrame({"session_id": session_ids}))
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


def recompute(store: Store, rules: Rules, progress=None, chunk: int = 250) -> dict:
    """Rebuild session_metrics, alerts and per-segment values for every ok session.

    Sessions are processed in ingest order so the store-relative rules see the same earlier
    sessions they saw at ingest; one transaction, so readers never see half of it.
    `progress(done, total)` is called after each chunk.
    """
    store.migrate()
    t0 = time.perf_counter()
    n_alerts = 0
    with store.write() as con:
        sessions = con.execute("SELECT session_id, duration_s, team, tags FROM sessions "
                               "WHERE status = 'ok' ORDER BY ingested_at, session_id").df()
        con.execute("DELETE FROM session_metrics")
        con.execute("DELETE FROM alerts")
        con.execute("UPDATE segments SET rolling_volatility = NULL")
        ref = Reference()
        total = len(sessions)
        for lo in range(0, total, chunk):
            part = sessions.iloc[lo:lo + chunk]
            con.register("ids_df", part[["session_id"]])
            seg = con.execute(f"SELECT {SEGMENT_COLUMNS} FROM segments "
                              "WHERE session_id IN (SELECT session_id FROM ids_df) "
                              "ORDER BY session_id").df()
            ch = con.execute("SELECT session_id, channel, speaker, flags FROM channels "
                             "WHERE session_id IN (SELECT session_id FROM ids_df) "
                             "ORDER BY session_id, channel").df()
            con.unregister("ids_df")
            seg_at, ch_at = _row_ranges(seg.session_id), _row_ranges(ch.session_id)
            metrics, updates, alerts = [], [], []
            for sid, dur, team, tags in zip(part.session_id, part.duration_s, part.team,
                                            part.tags):
                rows, upd, al = analyze_rows(
                    sid, seg.iloc[slice(*seg_at.get(sid, (0, 0)))],
                    ch.iloc[slice(*ch_at.get(sid, (0, 0)))], dur,
                    rules.for_session(team, tags), ref.values)
                ref.add(rows)
                metrics += rows
                updates.append(upd)
                alerts += al
            n_alerts += len(alerts)
            _write(con, part.session_id.tolist(), pd.DataFrame(metrics, columns=METRIC_COLUMNS),
                   pd.DataFrame(alerts, columns=ALERT_COLUMNS),
                   pd.concat(updates, ignore_index=True))
            if progress is not None:
                progress(min(lo + chunk, total), total)
    return {"sessions": total, "alerts": n_alerts, "rules": rules.full_digest,
            "seconds": time.perf_counter() - t0}


def _row_ranges(keys: pd.Series) -> dict[str, tuple[int, int]]:
    """(first, end) row of each key in a column sorted by that key."""
    values = keys.to_numpy()
    if len(values) == 0:
        return {}
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(values)]])
    return {values[a]: (int(a), int(b)) for a, b in zip(starts, ends)}
