"""Alerts re-judged from stored rows, through the very code that judged them at ingest.

The what-if view moves thresholds; the answer must come from the same rules code
(`core.analysis.analytics.judge`), the same rule set per session (`Rules.for_session`) and the same
reference (the volatility of the sessions stored before each one, in ingest order), so that with
unchanged thresholds it gives back exactly the stored `alerts` rows. Only what a threshold
decides is re-derived from the stored measurements (`core.analysis.metrics.judged_fields`: trend,
unreliable and its cause); everything measured (mix, shares, volatility, rolling volatility) is
read as stored. Inputs are `Reader` rows, so this module never touches the database.
"""
from __future__ import annotations

from itertools import groupby
from operator import itemgetter

import numpy as np
import pandas as pd

from core.analysis.alerts import ALERT_COLUMNS
from core.analysis.analytics import effective_duration, judge
from core.analysis.metrics import ALL, as_seq, judged_fields, low_confidence
from core.analysis.rules import Rules

META = ["agent_id", "customer_id", "team", "recorded_at", "ingested_at", "file_name"]
SEGMENT_COLUMNS = ["segment_id", "session_id", "channel", "speaker", "start_s", "end_s", "label",
                   "confidence", "flags", "rolling_volatility", "pitch_hz", "loudness_dbfs"]
NO_SEGMENTS = pd.DataFrame({c: pd.Series(dtype=float if c in ("start_s", "end_s", "confidence",
                                                                "rolling_volatility", "pitch_hz",
                                                                "loudness_dbfs") else object)
                            for c in SEGMENT_COLUMNS})


def _ranges(df: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """(first, end) row of each session in a frame sorted by session_id."""
    ids = df.session_id.to_numpy()
    if len(ids) == 0:
        return {}
    cut = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts, ends = np.concatenate([[0], cut]), np.concatenate([cut, [len(ids)]])
    return {ids[a]: (int(a), int(b)) for a, b in zip(starts, ends)}


def _reference(metrics: pd.DataFrame, position: dict[str, int]):
    """`earlier(k)`: per role, the volatility of the sessions before the k-th in ingest order —
    what core.analysis.analytics.Reference holds when session k is judged, read as prefixes of one
    array per role instead of being rebuilt session by session."""
    v = metrics[(metrics.speaker != ALL) & metrics.volatility.notna()]
    pos = v.session_id.map(position).to_numpy()
    by_role = {sp: (pos[m], v.volatility.to_numpy(float)[m])
               for sp in set(v.speaker) for m in [(v.speaker == sp).to_numpy()]}

    def earlier(k: int) -> dict[str, np.ndarray]:
        return {sp: vols[:np.searchsorted(p, k)] for sp, (p, vols) in by_role.items()}
    return earlier


def _rejudged(rows: list[dict], q, chans: list[tuple[str, tuple]], rules: Rules) -> list[dict]:
    """Stored metric rows with their threshold-decided fields re-derived under `rules`;
    `chans`: (speaker, quality flags) per channel, as core.analysis.metrics.channel_list gives them."""
    low = low_confidence(q, rules.confidence_threshold)
    out = []
    for m in rows:
        sp = m["speaker"]
        mine = np.ones(len(q), bool) if sp == ALL else (q.speaker == sp)
        flags = [f for s, f in chans if sp == ALL or s == sp]
        low_flags = [q.flags[i] for i in np.flatnonzero(low & mine)]
        out.append({**m, **judged_fields(m["neg_delta"], m["low_conf_share"], flags, low_flags,
                                         rules)})
    return out


def judge_stored(metrics: pd.DataFrame, segments: pd.DataFrame, channels: pd.DataFrame,
                 rules: Rules, window: set[str] | None = None,
                 utterances: pd.DataFrame | None = None) -> pd.DataFrame:
    """Alerts of the sessions in `window` (all when None) under `rules`.

    metrics: `Reader.session_metrics` rows of every session the reader covers (the reference
    needs the earlier ones, in or out of the window); segments and channels: `Reader.
    judge_segments` / `Reader.channel_flags` rows of the window's sessions; utterances:
    `Reader.utterances` rows of the window's sessions (their stored fused states), for the
    alerting categories. Returns
    ALERT_COLUMNS plus the session's metadata, ordered by session date (newest first), then
    as `core.analysis.alerts.frame` orders one session's alerts.
    """
    if metrics.empty:
        return pd.DataFrame(columns=ALERT_COLUMNS + META)
    metrics, position = _in_ingest_order(metrics)
    earlier = _reference(metrics, position)
    stored = _StoredRows(segments, channels, utterances)
    found: list[dict] = []
    for sid, rows in _sessions_in(metrics, window):
        found += _judge_session(sid, rows, stored, rules, earlier(position[sid]))
    return _newest_first(_with_meta(found, metrics))


def _in_ingest_order(metrics: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The metric rows in ingest order, and each session's place in it."""
    metrics = metrics.sort_values(["ingested_at", "session_id"], kind="stable")
    return metrics, {sid: k for k, sid in enumerate(metrics.session_id.drop_duplicates())}


class _StoredRows:
    """The window's segments, channels and utterances, sorted once and sliced per session:
    pandas calls per session would cost more than the rules themselves at thousands of
    sessions."""

    def __init__(self, segments: pd.DataFrame, channels: pd.DataFrame,
                 utterances: pd.DataFrame | None):
        seg = segments.sort_values(["session_id", "start_s", "channel", "segment_id"],
                                   kind="stable").reset_index(drop=True) if len(segments) \
            else NO_SEGMENTS
        self._seg_at = _ranges(seg)
        # one Seq of every segment, in as_seq's order within each session, cut per session
        self._every = as_seq(seg, presorted=True)
        self._rolling = seg.rolling_volatility.to_numpy(float)
        self._said = utterances.sort_values(["session_id", "start_s"], kind="stable") \
            .reset_index(drop=True) if utterances is not None and len(utterances) else None
        self._said_at = _ranges(self._said) if self._said is not None else {}
        self._chans = _channels_by_session(channels)

    def segments(self, sid: str):
        """The session's segments as a Seq, and their stored rolling volatility."""
        lo, hi = self._seg_at.get(sid, (0, 0))
        return self._every.take(np.arange(lo, hi)), self._rolling[lo:hi]

    def channels(self, sid: str) -> list[tuple[str, tuple]]:
        return self._chans.get(sid, [])

    def utterances(self, sid: str) -> pd.DataFrame | None:
        return self._said.iloc[slice(*self._said_at[sid])] if sid in self._said_at else None


def _channels_by_session(channels: pd.DataFrame) -> dict[str, list[tuple[str, tuple]]]:
    """(speaker, quality flags) of each session's channels, in channel order."""
    out: dict[str, list] = {}
    if len(channels):
        ch = channels.sort_values(["session_id", "channel"], kind="stable").reset_index(drop=True)
        for sid, sp, flags in zip(ch.session_id, ch.speaker, ch["flags"]):
            out.setdefault(sid, []).append((sp, tuple(flags) if flags is not None else ()))
    return out


def _sessions_in(metrics: pd.DataFrame, window: set[str] | None):
    """(session id, its metric rows) for each session of the window, in ingest order."""
    inside = metrics if window is None else metrics[metrics.session_id.isin(window)]
    for sid, rows in groupby(inside.to_dict("records"), key=itemgetter("session_id")):
        yield sid, list(rows)


def _judge_session(sid: str, rows: list[dict], stored: _StoredRows, rules: Rules,
                   reference: dict[str, np.ndarray]) -> list[dict]:
    """One session's alerts: its rule set, its metrics re-judged under it, then the rules."""
    first = rows[0]
    q, rolling = stored.segments(sid)
    chosen = rules.for_session(first["team"], first["tags"])
    return judge(sid, q, _rejudged(rows, q, stored.channels(sid), chosen), rolling,
                 effective_duration(first["duration_s"], q), chosen, reference,
                 stored.utterances(sid))


def _with_meta(found: list[dict], metrics: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(found, columns=ALERT_COLUMNS)
    return out.join(metrics.drop_duplicates("session_id").set_index("session_id")[META],
                    on="session_id")


def _newest_first(out: pd.DataFrame) -> pd.DataFrame:
    """By session date (recorded, else ingested), newest first; a session's alerts keep
    their order."""
    when = out.recorded_at.fillna(out.ingested_at) if len(out) else out.recorded_at
    return (out.assign(_when=when).sort_values(["_when", "session_id"], ascending=[False, True],
                                               kind="stable")
            .drop(columns="_when").reset_index(drop=True))


def stale(metrics: pd.DataFrame, rules: Rules) -> set[str]:
    """Sessions whose stored analytics were made under other rules than their set in `rules`
    (their `rules_digest` differs): their stored alerts are not what `rules` would say."""
    if metrics.empty:
        return set()
    first = metrics.drop_duplicates("session_id")
    return {sid for sid, team, tags, digest in zip(first.session_id, first.team, first.tags,
                                                   first.rules_digest)
            if rules.for_session(team, tags).digest != digest}
