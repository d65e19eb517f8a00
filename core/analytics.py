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
from core.metrics import ALL, order, segment_updates, session_metrics
from core.rules import Rules


@dataclass(frozen=True)
class Analysis:
    metrics: pd.DataFrame  # METRIC_COLUMNS, one row per speaker plus speaker="all"
    segments: pd.DataFrame  # segment_id, rolling_volatility, fallback_action
    alerts: pd.DataFrame  # ALERT_COLUMNS


def effective_duration(duration_s: float | None, seg: pd.DataFrame) -> float:
    if duration_s and duration_s > 0:
        return float(duration_s)
    return float(seg.end_s.max()) if len(seg) else 0.0


def analyze(session_id: str, seg: pd.DataFrame, channels: pd.DataFrame | None,
            duration_s: float | None, rules: Rules,
            reference: dict[str, list[float]] | None = None) -> Analysis:
    """Metrics, per-segment values and alerts for one session.

    `reference`: volatility of earlier sessions by speaker role (see module docstring).
    """
    seg = order(seg)
    dur = effective_duration(duration_s, seg)
    metrics = session_metrics(session_id, seg, channels, dur, rules)
    rolling = segment_updates(seg, rules.window, rules.confidence_threshold)
    alerts = pd.concat([session_alerts(session_id, seg, metrics, dur, rules),
                        volatility_alerts(session_id, seg, metrics, rolling, reference or {},
                                          rules)], ignore_index=True)
    return Analysis(metrics, rolling, frame(alerts.to_dict("records")))


class Reference:
    """Per-role volatility of the sessions processed so far, in ingest order."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)

    def add(self, metrics: pd.DataFrame) -> None:
        for sp, vol in zip(metrics.speaker, metrics.volatility):
            if sp != ALL and vol is not None and not pd.isna(vol):
                self.values[sp].append(float(vol))

    @classmethod
    def from_rows(cls, rows: pd.DataFrame) -> "Reference":
        ref = cls()
        ref.add(rows)
        return ref
