"""Alerts re-judged with thresholds from the page, on hand-made session metrics."""
from __future__ import annotations

import pandas as pd

from dashboard.components.whatif import Thresholds, evaluate


def metrics() -> pd.DataFrame:
    rows = []
    for i in range(6):
        rows.append({"session_id": f"s{i}", "speaker": "customer", "volatility": 0.1 * (i + 1),
                     "neg_last": [0.2, 0.4, 0.6, 0.8, 1.0, 0.0][i],
                     "neg_delta": [0.0, 0.1, 0.3, 0.5, -0.2, 0.0][i],
                     "low_conf_share": [0.0, 0.0, 0.0, 0.0, 0.0, 0.9][i], "duration_s": 100.0})
        rows.append({"session_id": f"s{i}", "speaker": "agent", "volatility": 0.5,
                     "neg_last": 1.0, "neg_delta": 1.0, "low_conf_share": 0.0,
                     "duration_s": 100.0})
        rows.append({"session_id": f"s{i}", "speaker": "all", "volatility": 9.0,
                     "neg_last": 1.0, "neg_delta": 1.0, "low_conf_share": 1.0,
                     "duration_s": 100.0})
    return pd.DataFrame(rows)


PEAKS = pd.DataFrame({"session_id": ["s5"], "speaker": ["customer"], "peak_t_s": [42.0]})
STORED = pd.DataFrame({"session_id": ["s1", "s2"], "speaker": ["customer"] * 2,
                       "rule": ["angry_streak", "negative_last_quarter"], "t_s": [5.0, 75.0],
                       "severity": ["high", "medium"], "detail": ["x", "y"]})


def test_each_threshold_selects_the_right_sessions():
    out = evaluate(metrics(), PEAKS, STORED, Thresholds(
        volatility_percentile=80, min_reference=5, negative_last_quarter=0.6, trend_delta=0.3,
        unreliable_share=0.5, roles=("customer",)), {"angry_streak"})
    by = {r: sorted(g.session_id) for r, g in out.groupby("rule")}
    assert by["negative_last_quarter"] == ["s2", "s3", "s4"]  # agents are not watched
    assert by["ends_worse"] == ["s2", "s3"]
    assert by["unreliable_audio"] == ["s5"]
    assert by["volatility_high"] == ["s5"]  # 0.6 is the only value above the 80th pct (0.5)
    assert by["angry_streak"] == ["s1"]  # stored streaks pass; other stored rules are re-judged
    assert "all" not in set(out.speaker)
    assert out.severity.iloc[0] == "high"
    vol = out[out.rule == "volatility_high"].iloc[0]
    assert vol.t_s == 42.0  # drill-down goes to the peak of rolling volatility
    neg = out[out.rule == "negative_last_quarter"].iloc[0]
    assert neg.t_s == 75.0  # the start of the last quarter


def test_volatility_waits_for_enough_sessions_and_roles_can_be_emptied():
    out = evaluate(metrics(), PEAKS, STORED, Thresholds(min_reference=7, roles=()), set())
    assert "volatility_high" not in set(out.rule)
    assert set(out.rule) == {"unreliable_audio"}


def test_nothing_to_judge():
    out = evaluate(metrics().iloc[0:0], PEAKS.iloc[0:0], STORED.iloc[0:0], Thresholds(), set())
    assert out.empty and list(out.columns)[:3] == ["session_id", "speaker", "rule"]
