"""The writer as it was before its vectorised group path (December 2026), kept only so that
bench/import.py can print the ratio against it from the same run, and so a test can check that
both store the same rows. Not used by Emoscope itself.

It differs from core.storage.sessions._save_group in how, not in what: it deletes a group's rows from
every table whether or not the sessions were stored before, inserts the segments, then reads
them back through pandas to compute the analytics one session at a time, and updates the
segments' rolling volatility and fallback action afterwards.

Use: `with writer_before.installed(): ...` (every SessionWriter saves the old way inside).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd

from core.storage import analysers, sessions
from core.analysis import categories, fusion
from core.analysis.alerts import ALERT_COLUMNS
from core.analysis.analytics import Reference, analyze_rows
from core.analysis.categories import CATEGORY_COLUMNS
from core.analysis.metrics import METRIC_COLUMNS
from core.analysis.rules import Rules
from core.storage.group_tables import (analysis_table, channel_table, frame_table, ids_table,
                                       insert, segment_table, session_table)
from core.storage.sessions import session_tables
from core.storage.store import Connection
from core.text.transcripts import event_table, utterance_table, word_table

GROUP = 64  # sessions per transaction, as the import committed them then

SEGMENT_COLUMNS = ("segment_id, session_id, channel, speaker, start_s, end_s, label, "
                   "confidence, scores, embedding, flags, pitch_hz, loudness_dbfs")
UTTERANCE_COLUMNS = ("utterance_id, session_id, channel, speaker, start_s, end_s, text, "
                     "sentiment")


@contextmanager
def installed():
    """The old group write, the word index synced after every commit, every commit
    checkpointed with DuckDB's row-group vacuum and the index reading the saved rows back
    from the store, as it was."""
    saved = sessions._save_group, sessions._words_changed, sessions.BULK
    sessions._save_group, sessions._words_changed = save_group, lambda *a: True
    sessions.BULK = float("inf")
    try:
        yield
    finally:
        sessions._save_group, sessions._words_changed, sessions.BULK = saved


def save_group(con, results, run_id, base, first_pos, rules, audio_root, gone,
               held=None) -> list[bool]:
    # `held` stays empty: the index reads the stored rows back from the store, as it did.
    con.register("ids_tbl", ids_table([r.session_id for r in results]))
    ok_before = {row[0] for row in con.execute(
        "SELECT session_id FROM sessions WHERE status = 'ok' AND session_id IN "
        "(SELECT session_id FROM ids_tbl)").fetchall()}
    con.unregister("ids_tbl")
    keep = [r.status == "ok" or r.session_id not in ok_before for r in results]
    kept = [(first_pos + i, r) for i, (r, k) in enumerate(zip(results, keep)) if k]
    if not kept:
        return keep
    con.register("del_tbl", ids_table([r.session_id for _, r in kept]))
    gone += [row[0] for row in con.execute(
        "SELECT segment_id FROM segments WHERE session_id IN (SELECT session_id FROM del_tbl)"
    ).fetchall()]
    for table in session_tables():
        con.execute(f"DELETE FROM {table} WHERE session_id IN (SELECT session_id FROM del_tbl)")
    con.unregister("del_tbl")
    insert(con, "sessions", session_table(kept, run_id, base, audio_root))
    ok = [r for _, r in kept if r.status == "ok"]
    if any(r.channels for r in ok):
        insert(con, "channels", channel_table(ok))
    if any(r.segments for r in ok):
        insert(con, "segments", segment_table(ok), casts={
            "scores": "FLOAT[9]", "embedding": "FLOAT[]"})
    if any(r.curves for r in ok):
        insert(con, "frames", frame_table(ok))
    if any(r.utterances for r in ok):
        insert(con, "utterances", utterance_table(ok))
        if any(u.words for r in ok for u in r.utterances):
            insert(con, "words", word_table(ok))
    if any(r.audio_events for r in ok):
        insert(con, "audio_events", event_table(ok))
    for t in analysers.tables():
        if any(r.analyses.get(t.name) for r in ok):
            insert(con, t.name, analysis_table(ok, t))
    write_sessions(con, [r.session_id for r in ok], rules)
    return keep


def _utterances(con: Connection) -> pd.DataFrame:
    """The utterances of the sessions in `ids_df`, sorted by session."""
    return con.execute(f"SELECT {UTTERANCE_COLUMNS} FROM utterances WHERE session_id IN "
                       "(SELECT session_id FROM ids_df) ORDER BY session_id, start_s").df()


def write_sessions(con: Connection, session_ids: list[str], rules: Rules) -> None:
    """Analytics for sessions just stored, on the caller's connection and transaction.

    `session_ids` are in ingest order (their `ingested_at` increases along the list). The
    volatility reference of each is every ok session ingested before it — those stored
    earlier plus the ones before it in the list — so the rows equal those of saving the
    sessions one at a time, and those `recompute` builds.
    """
    if not session_ids:
        return
    con.register("ids_df", pd.DataFrame({"session_id": pd.Series(session_ids, dtype=object),
                                         "pos": np.arange(len(session_ids))}))
    sessions = con.execute(
        "SELECT s.session_id, s.duration_s, s.ingested_at, s.team, s.tags FROM sessions s "
        "JOIN ids_df i USING (session_id) WHERE s.status = 'ok' ORDER BY i.pos").df()
    if sessions.empty:
        con.unregister("ids_df")
        return
    first = sessions.iloc[0]
    ref = con.execute(
        "SELECT m.speaker, m.volatility FROM session_metrics m JOIN sessions s "
        "USING (session_id) WHERE s.status = 'ok' AND m.volatility IS NOT NULL "
        "AND (s.ingested_at < ? OR (s.ingested_at = ? AND s.session_id < ?)) "
        "AND s.session_id NOT IN (SELECT session_id FROM ids_df)",
        [first.ingested_at, first.ingested_at, first.session_id]).df()
    seg = con.execute(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE session_id IN "
                      "(SELECT session_id FROM ids_df) ORDER BY session_id").df()
    ch = con.execute("SELECT session_id, channel, speaker, flags FROM channels WHERE "
                     "session_id IN (SELECT session_id FROM ids_df) "
                     "ORDER BY session_id, channel").df()
    utt = _utterances(con)
    con.unregister("ids_df")
    _analyse_in_order(con, sessions, seg, ch, utt, rules, Reference.from_rows(ref))


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
        said = None
        if sid in utt_at:
            said = utt.iloc[slice(*utt_at[sid])]
            states = fusion.session_fusion(said, s_seg, judged_by)
            fused.append(states)
            said = said.merge(states, on="utterance_id", how="left")
            whole = float(dur) if dur and dur > 0 else \
                float(s_seg.end_s.max()) if len(s_seg) else 0.0
            tagged += categories.judge(sid, said, whole, judged_by, s_seg)[0]
        rows, upd, al = analyze_rows(
            sid, s_seg, ch.iloc[slice(*ch_at.get(sid, (0, 0)))], dur, judged_by, ref.values,
            said)
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


def _row_ranges(keys: pd.Series) -> dict[str, tuple[int, int]]:
    """(first, end) row of each key in a column sorted by that key."""
    values = keys.to_numpy()
    if len(values) == 0:
        return {}
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(values)]])
    return {values[a]: (int(a), int(b)) for a, b in zip(starts, ends)}
