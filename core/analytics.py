"""Everything derived from one stored session, in one call, for ingest and recompute alike.

The store-relative rule (volatility above a percentile) compares a session with the sessions
stored *before* it (by ingest time). Ingest sees exactly those; recompute walks the store in
the same order and rebuilds the same reference, so both produce identical rows, and an alert
never appears or vanishes later just because newer sessions arrived.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pandas as pd

from core.alerts import frame, session_alerts, volatility_alerts
from core.metrics import (ALL, METRIC_COLUMNS, Seq, as_seq, channel_list, metric_rows,
                          segment_updates, speaker_parts)
from core.rules import Rules


@dataclass(frozen=True)
class Analysis:
    metrics: pd.DataFrame  # METRIC_COLUMNS, one row per speaker plus speaker="all"
    segments: pd.DataFrame  # segment_id, rolling_volatility, fallback_action
    alerts: pd.DataFrame  # ALERT_COLUMNS


def effective_duration(duration_s: float | None, q: Seq) -> float:
    if duration_s and duration_s > 0:
        return float(duration_s)
    return float(q.end.max()) if len(q) else 0.0


def analyze(session_id: str, seg, channels: pd.DataFrame | None,
            duration_s: float | None, rules: Rules,
            reference: dict[str, list[float]] | None = None) -> Analysis:
    """Metrics, per-segment values and alerts for one session.

    `seg`: the session's segments (a DataFrame shaped like the `segments` table, or a Seq);
    `reference`: volatility of earlier sessions by speaker role (see module docstring).
    """
    rows, updates, alerts = analyze_rows(session_id, seg, channels, duration_s, rules,
                                         reference)
    return Analysis(pd.DataFrame(rows, columns=METRIC_COLUMNS), updates, frame(alerts))


def analyze_rows(session_id: str, seg, channels, duration_s, rules: Rules,
                 reference=None) -> tuple[list[dict], pd.DataFrame, list[dict]]:
    """`analyze` as plain rows (metric dicts, segment updates, alert dicts in `frame` order),
    so a bulk recompute builds one DataFrame per chunk instead of three per session."""
    q = as_seq(seg)
    dur = effective_duration(duration_s, q)
    parts = speaker_parts(q, rules.window)
    rows = metric_rows(session_id, q, channel_list(channels), dur, rules, parts)
    updates = segment_updates(q, rules.window, rules.confidence_threshold, parts)
    alerts = judge(session_id, q, rows, updates.rolling_volatility.to_numpy(), dur, rules,
                   reference)
    return rows, updates, alerts


def judge(session_id: str, q: Seq, rows: list[dict], rolling, duration_s: float, rules: Rules,
          reference: dict[str, list[float]] | None = None) -> list[dict]:
    """Every alert rule over one session's metric rows and segments, in `frame` order.

    The one place alerts are decided: ingest and recompute call it on freshly computed rows,
    the what-if view (core.rejudge) on stored rows under changed thresholds."""
    alerts = session_alerts(session_id, q, rows, duration_s, rules) + volatility_alerts(
        session_id, q, rows, rolling, reference or {}, rules)
    return sorted(alerts, key=lambda r: (r["t_s"], r["speaker"], r["rule"]))


def judge_live(session_id: str, seg, duration_s: float, rules: Rules,
               reference: dict[str, list[float]] | None = None) -> list[dict]:
    """What a live stream may alert on before it ends, over the utterances closed so far
    (`seg`, shaped like `segments`): the kinds registered `live` with a check (streaks...),
    and the store-relative kinds against `reference` with each speaker's current rolling
    volatility (over its last `window` utterances) as its volatility. The kinds that need the
    whole session are judged when it ends, by `judge`."""
    q = as_seq(seg)
    parts = speaker_parts(q, rules.window)
    rows = metric_rows(session_id, q, [], duration_s, rules, parts)
    now = {sp: p["roll"][-1] for sp, p in parts.items() if len(p["roll"])}
    current = [{**r, "volatility": now.get(r["speaker"], float("nan"))} for r in rows]
    updates = segment_updates(q, rules.window, rules.confidence_threshold, parts)
    alerts = session_alerts(session_id, q, rows, duration_s, rules, live_only=True) + \
        volatility_alerts(session_id, q, current, updates.rolling_volatility.to_numpy(),
                          reference or {}, rules)
    return sorted(alerts, key=lambda r: (r["t_s"], r["speaker"], r["rule"]))


class Reference:
    """Per-role volatility of the sessions processed so far, in ingest order."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)

    def add(self, metrics) -> None:
        """Metric rows (a DataFrame or a list of dicts) of one or more sessions."""
        if isinstance(metrics, pd.DataFrame):  # column-wise: a store's worth of rows is large
            vol = pd.to_numeric(metrics["volatility"], errors="coerce")
            keep = metrics[(metrics["speaker"] != ALL) & vol.notna()]
            for sp, v in zip(keep["speaker"].tolist(), vol[keep.index].astype(float).tolist()):
                self.values[sp].append(v)
            return
        for sp, vol in ((r["speaker"], r["volatility"]) for r in metrics):
            if sp != ALL and vol is not None and not pd.isna(vol):
                self.values[sp].append(float(vol))

    @classmethod
    def from_rows(cls, rows: pd.DataFrame) -> "Reference":
        ref = cls()
        ref.add(rows)
        return ref
