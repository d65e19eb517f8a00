"""Analytics rows derived from segments: session_metrics, alerts and per-segment rolling
volatility and fallback action. Computed for each group of sessions the writer saves, from
memory, before anything is inserted (`analyse`: SessionWriter puts the per-segment values on
the segments it inserts, then calls `insert` for the rest, in the group's transaction), and
rebuilt whole by `recompute` from the stored segments.

The computation lives in core.analysis.analytics; this module only moves rows in and out of SQL.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa

from core.analysis import categories, fusion
from core.analysis.alerts import ALERT_COLUMNS
from core.analysis.analytics import (GroupAnalysis, GroupSegments, GroupSession, Reference,
                            analyze_group, analyze_rows)
from core.analysis.categories import CATEGORY_COLUMNS
from core.analysis.metrics import ALL, METRIC_COLUMNS
from core.analysis.rules import Rules
from core.storage.store import Connection, Store, arrow_of

SEGMENT_COLUMNS = ("segment_id, session_id, channel, speaker, start_s, end_s, label, "
                   "confidence, scores, embedding, flags, pitch_hz, loudness_dbfs")
UTTERANCE_COLUMNS = ("utterance_id, session_id, channel, speaker, start_s, end_s, text, "
                     "sentiment")  # and what core/analysis/fusion derives from them


def _utterances(con: Connection) -> pd.DataFrame:
    """The utterances of the sessions in `ids_df`, sorted by session."""
    return con.execute(f"SELECT {UTTERANCE_COLUMNS} FROM utterances WHERE session_id IN "
                       "(SELECT session_id FROM ids_df) ORDER BY session_id, start_s").df()


def analyse(con: Connection, sessions: list[GroupSession], seg: GroupSegments,
            first_at) -> GroupAnalysis:
    """Analytics of sessions about to be stored, in ingest order, on the caller's transaction.

    `first_at`: the ingest time the first of them will be stored with. The volatility
    reference of each is every ok session ingested before it — those stored before (read
    here, before the group's rows go in) plus the ones before it in the list — so the rows
    equal those of saving the sessions one at a time, and those `recompute` builds."""
    ref = Reference()
    if sessions:  # one list per role: the percentile rules read them in any order
        for speaker, values in con.execute(
                "SELECT m.speaker, list(m.volatility) FROM session_metrics m JOIN sessions s "
                "USING (session_id) WHERE s.status = 'ok' AND m.volatility IS NOT NULL "
                "AND NOT isnan(m.volatility) AND m.speaker <> ? "
                "AND (s.ingested_at < ? OR (s.ingested_at = ? AND s.session_id < ?)) "
                "GROUP BY m.speaker", [ALL, first_at, first_at, sessions[0].session_id]
                ).fetchall():
            ref.extend(speaker, values)
    # Voice and words together first: the categories read the fused states.
    said, fused = [], []
    for i, s in enumerate(sessions):
        if not s.utterances:
            said.append(None)
            continue
        utts = _utterance_frame(s)
        states = fusion.session_fusion(utts, _segment_frame(seg, i), s.rules)
        fused.append(states)
        said.append(utts.merge(states, on="utterance_id", how="left"))
    analysis = analyze_group(sessions, seg, ref, said)
    analysis.fused = pd.concat(fused, ignore_index=True) if fused else None
    return analysis


def _utterance_frame(s: GroupSession) -> pd.DataFrame:
    """A session's utterances as fusion reads them from the store."""
    u = s.utterances
    return pd.DataFrame({
        "utterance_id": [x.utterance_id for x in u], "channel": [x.channel for x in u],
        "speaker": [x.speaker for x in u],
        "start_s": np.array([x.start_s for x in u], dtype=float),
        "end_s": np.array([x.end_s for x in u], dtype=float), "text": [x.text for x in u],
        "sentiment": pd.Series([x.sentiment for x in u], dtype=float)})


def _segment_frame(seg: GroupSegments, i: int) -> pd.DataFrame:
    lo, hi = int(seg.bounds[i]), int(seg.bounds[i + 1])
    return pd.DataFrame({"channel": seg.channel[lo:hi], "start_s": seg.start[lo:hi],
                         "end_s": seg.end[lo:hi], "scores": list(seg.scores[lo:hi])})


def insert(con: Connection, analysis: GroupAnalysis) -> None:
    """The metric, alert and category rows of `analyse`, one bulk insert each (their sessions'
    old rows are already gone: the writer deletes a replaced session whole)."""
    for table, rows, cols in (("session_metrics", analysis.metrics, METRIC_COLUMNS),
                              ("alerts", analysis.alerts, ALERT_COLUMNS),
                              ("session_categories", analysis.categories, CATEGORY_COLUMNS)):
        if not rows:
            continue
        # The table's own Arrow types (a column another migration adds included), NaN as
        # NULL as a pandas frame would give it.
        types = arrow_of(con.sql(f"SELECT {', '.join(cols)} FROM {table} LIMIT 0")).schema
        data = pa.table({c: pa.array([r[c] for r in rows], types.field(c).type,
                                     from_pandas=True) for c in cols})
        names = ", ".join(cols)
        con.register("derived_tbl", data)
        con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM derived_tbl")
        con.unregister("derived_tbl")


def _analyse_in_order(con: Connection, sessions: pd.DataFrame, seg: pd.DataFrame,
                      ch: pd.DataFrame, utt: pd.DataFrame, rules: Rules, ref: Reference) -> int:
    """Analyse `sessions` (session_id, duration_s, team, tags; in ingest order) from their
    segment, channel and utterance rows (sorted by session), each under its rule set, growing
    `ref` as it goes; write the rows. Returns the number of alerts."""
    seg_at, ch_at = _row_ranges(seg.session_id), _row_ranges(ch.session_id)
    utt_at = _row_ranges(utt.session_id)
    metrics, updates, alerts, fused, tagged = [], [], [], [], []
    for sid, dur, team, tags in zip(sessions.session_id, sessions.duration_s, sessions.team,
                                    sessions.tags):
        judged_by = rules.for_session(team, tags)
        s_seg = seg.iloc[slice(*seg_at.get(sid, (0, 0)))]
        said, cat_alerts = None, []
        if sid in utt_at:  # voice and words together first: categories read the fused states
            said = utt.iloc[slice(*utt_at[sid])]
            states = fusion.session_fusion(said, s_seg, judged_by)
            fused.append(states)
            said = said.merge(states, on="utterance_id", how="left")
            whole = float(dur) if dur and dur > 0 else \
                float(s_seg.end_s.max()) if len(s_seg) else 0.0  # as analyze_rows reads it
            tags, cat_alerts = categories.judge(sid, said, whole, judged_by, s_seg)
            tagged += tags
        rows, upd, al = analyze_rows(
            sid, s_seg, ch.iloc[slice(*ch_at.get(sid, (0, 0)))], dur, judged_by, ref.ranked,
            category_alerts=cat_alerts)
        ref.add(rows)
        metrics += rows
        updates.append(upd)
        alerts += al
    _write(con, sessions.session_id.tolist(), pd.DataFrame(metrics, columns=METRIC_COLUMNS),
           pd.DataFrame(alerts, columns=ALERT_COLUMNS), pd.concat(updates, ignore_index=True),
           pd.DataFrame(tagged, columns=CATEGORY_COLUMNS))
    if fused:
        _write_fused(con, pd.concat(fused, ignore_index=True))
    return len(alerts)


def _write_fused(con: Connection, fused: pd.DataFrame) -> None:
    con.register("fused_df", fused.astype({"turn": "int32"}))
    con.execute("UPDATE utterances SET voice = f.voice, fused = f.fused, turn = f.turn, "
                "turn_fused = f.turn_fused FROM fused_df f "
                "WHERE utterances.utterance_id = f.utterance_id")
    con.unregister("fused_df")


def _write(con: Connection, session_ids: list[str], metrics: pd.DataFrame,
           alerts: pd.DataFrame, segments: pd.DataFrame, tags: pd.DataFrame) -> None:
    con.register("ids_df", pd.DataFrame({"session_id": session_ids}))
    for table in ("session_metrics", "alerts", "session_categories"):
        con.execute(f"DELETE FROM {table} WHERE session_id IN (SELECT session_id FROM ids_df)")
    con.unregister("ids_df")
    for table, df, cols in (("session_metrics", metrics, METRIC_COLUMNS),
                            ("alerts", alerts, ALERT_COLUMNS),
                            ("session_categories", tags, CATEGORY_COLUMNS)):
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
    """Rebuild session_metrics, alerts, categories, per-segment values and the utterances'
    fused states for every ok session.

    Sessions are processed in ingest order so the store-relative rules see the same earlier
    sessions they saw at ingest; one transaction, so readers never see half of it.
    `progress(done, total)` is called after each chunk.
    """
    store.migrate()
    t0 = time.perf_counter()
    with store.write() as con:
        out = recompute_in(con, rules, progress, chunk)
    return out | {"seconds": time.perf_counter() - t0}


def recompute_in(con: Connection, rules: Rules, progress=None, chunk: int = 250) -> dict:
    """`recompute` on the caller's transaction (a head's activation relabels and rebuilds in
    one)."""
    n_alerts = 0
    sessions = con.execute("SELECT session_id, duration_s, team, tags FROM sessions "
                           "WHERE status = 'ok' ORDER BY ingested_at, session_id").df()
    con.execute("DELETE FROM session_metrics")
    con.execute("DELETE FROM alerts")
    con.execute("DELETE FROM session_categories")
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
        utt = _utterances(con)
        con.unregister("ids_df")
        n_alerts += _analyse_in_order(con, part, seg, ch, utt, rules, ref)
        if progress is not None:
            progress(min(lo + chunk, total), total)
    return {"sessions": total, "alerts": n_alerts, "rules": rules.full_digest}


def _row_ranges(keys: pd.Series) -> dict[str, tuple[int, int]]:
    """(first, end) row of each key in a column sorted by that key."""
    values = keys.to_numpy()
    if len(values) == 0:
        return {}
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(values)]])
    return {values[a]: (int(a), int(b)) for a, b in zip(starts, ends)}
