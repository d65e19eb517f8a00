"""Alerts re-evaluated with thresholds chosen on the page, from the stored per-session metrics.

The session-level rules (volatility percentile, negative last quarter, ends worse, unreliable
audio) need only `session_metrics`, so moving a slider re-judges every session at once. Streak
rules need the label sequence of every segment; those come from the stored alerts as computed
with the rules file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

COLUMNS = ["session_id", "speaker", "rule", "t_s", "severity", "detail"]


@dataclass(frozen=True)
class Thresholds:
    volatility_percentile: float = 95.0
    min_reference: int = 5  # sessions of a role needed before its percentile means anything
    negative_last_quarter: float = 0.5
    trend_delta: float = 0.2
    unreliable_share: float = 0.5
    roles: tuple[str, ...] = ("customer", "speaker")  # watched by the emotion rules


def evaluate(metrics: pd.DataFrame, peaks: pd.DataFrame, stored: pd.DataFrame,
             th: Thresholds, streak_rules: set[str]) -> pd.DataFrame:
    """Alert rows (COLUMNS) for every (session, speaker) in `metrics` under thresholds `th`."""
    rows: list[pd.DataFrame] = []
    m = metrics[metrics.speaker != "all"] if len(metrics) else metrics
    if len(m):
        dur = m.duration_s.fillna(0.0).astype(float)
        watched = m.speaker.isin(th.roles)
        # Volatility above the chosen percentile of its role across the sessions shown.
        vol = m.volatility.astype(float)
        counts = m.groupby("speaker").volatility.transform("count")
        limit = m.groupby("speaker").volatility.transform(
            lambda v: np.nanpercentile(v.astype(float), th.volatility_percentile)
            if v.notna().any() else np.nan)
        hit = (counts >= th.min_reference) & (vol > limit)
        if hit.any():
            h = m[hit].merge(peaks, on=["session_id", "speaker"], how="left")
            rows.append(pd.DataFrame({
                "session_id": h.session_id, "speaker": h.speaker, "rule": "volatility_high",
                "t_s": h.peak_t_s.fillna(0.0), "severity": "medium",
                "detail": [f"volatility {v:.3f} above the {th.volatility_percentile:g}th "
                           f"percentile {lim:.3f} of {n} {sp} sessions"
                           for v, lim, n, sp in zip(h.volatility, limit[hit], counts[hit],
                                                    h.speaker)]}))
        neg = m.neg_last.astype(float)
        hit = watched & (neg >= th.negative_last_quarter - 1e-9)
        if hit.any():
            rows.append(pd.DataFrame({
                "session_id": m.session_id[hit], "speaker": m.speaker[hit],
                "rule": "negative_last_quarter", "t_s": 0.75 * dur[hit], "severity": "medium",
                "detail": [f"negative share {x:.2f} in the last quarter (threshold "
                           f"{th.negative_last_quarter:.2f})" for x in neg[hit]]}))
        delta = m.neg_delta.astype(float)
        hit = watched & (delta >= th.trend_delta - 1e-9)
        if hit.any():
            rows.append(pd.DataFrame({
                "session_id": m.session_id[hit], "speaker": m.speaker[hit], "rule": "ends_worse",
                "t_s": 0.75 * dur[hit], "severity": "low",
                "detail": [f"negative share rose {d:+.2f} from first to last quarter "
                           f"(threshold {th.trend_delta:.2f})" for d in delta[hit]]}))
        low = m.low_conf_share.astype(float)
        hit = low >= th.unreliable_share - 1e-9
        if hit.any():
            rows.append(pd.DataFrame({
                "session_id": m.session_id[hit], "speaker": m.speaker[hit],
                "rule": "unreliable_audio", "t_s": 0.0, "severity": "medium",
                "detail": [f"{x:.0%} of segments need clarification (threshold "
                           f"{th.unreliable_share:.0%})" for x in low[hit]]}))
    if len(stored) and streak_rules:
        s = stored[stored.rule.isin(streak_rules)]
        rows.append(s[COLUMNS])
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat([r for r in rows if len(r)], ignore_index=True) \
        if any(len(r) for r in rows) else pd.DataFrame(columns=COLUMNS)
    rank = out.severity.map({"high": 3, "medium": 2, "low": 1}).fillna(0)
    return out.assign(_r=rank).sort_values(["_r", "session_id", "t_s"],
                                           ascending=[False, True, True]) \
        .drop(columns="_r").reset_index(drop=True)
