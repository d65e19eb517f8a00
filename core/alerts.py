"""Alert rules evaluated over one session's metrics and segments; alerts are rows, not pop-ups.

Each alert names the emotion behind it and the suggested response for that emotion (seed §4.1).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.labels import LABELS
from core.metrics import ALL, REQUEST_CLARIFICATION, fallback_action, order
from core.rules import AlertRule, Rules

ALERT_COLUMNS = ["session_id", "speaker", "rule", "t_s", "severity", "detail", "emotion",
                 "suggested_response", "suggested_response_zh"]


def _alert(sid: str, speaker: str, rule: AlertRule, t_s: float, detail: str,
           emotion: str | None, rules: Rules) -> dict:
    return {"session_id": sid, "speaker": speaker, "rule": rule.rule, "t_s": float(t_s),
            "severity": rule.severity, "detail": detail, "emotion": emotion,
            "suggested_response": rules.response(emotion, "en"),
            "suggested_response_zh": rules.response(emotion, "zh")}


def _dominant(shares, labels) -> str | None:
    """The label with the largest share among `labels` (canonical order breaks ties)."""
    shares = np.asarray(shares, float)
    best = max((lab for lab in LABELS if lab in labels),
               key=lambda lab: shares[LABELS.index(lab)], default=None)
    return best if best is not None and shares[LABELS.index(best)] > 0 else None


def streaks(labels, wanted) -> list[tuple[int, int]]:
    """(first index, length) of each maximal run of labels that are all in `wanted`."""
    out, start = [], None
    labels = list(labels)
    for i, lab in enumerate(labels + [None]):
        if lab in wanted:
            start = i if start is None else start
        elif start is not None:
            out.append((start, i - start))
            start = None
    return out


def _streak(sid, sp, part, rule, rules) -> list[dict]:
    out = []
    for i, n in streaks(part.label, rule.labels):
        if n < rule.min_count:
            continue
        run = part.iloc[i:i + n]
        counts = run.label.value_counts()
        emotion = max(rule.labels, key=lambda lab: (counts.get(lab, 0), -LABELS.index(lab)))
        what = emotion if len(rule.labels) == 1 else "/".join(rule.labels)
        out.append(_alert(sid, sp, rule, run.start_s.iloc[0],
                          f"{what} in {n} consecutive segments from {run.start_s.iloc[0]:.1f} s "
                          f"to {run.end_s.iloc[-1]:.1f} s", emotion, rules))
    return out


def session_alerts(sid: str, seg: pd.DataFrame, metrics: pd.DataFrame, duration_s: float,
                   rules: Rules) -> pd.DataFrame:
    """Every rule that needs only this session (all kinds but volatility_percentile)."""
    seg = order(seg)
    rows: list[dict] = []
    last_q = 0.75 * duration_s
    for m in metrics[metrics.speaker != ALL].itertuples(index=False):
        part = seg[seg.speaker == m.speaker]
        for rule in rules.alerts:
            if not rule.watches(m.speaker):
                continue
            if rule.kind == "streak":
                rows += _streak(sid, m.speaker, part, rule, rules)
            elif rule.kind == "last_quarter_share" and m.neg_last is not None \
                    and not pd.isna(m.neg_last):
                idx = [LABELS.index(x) for x in rule.labels]
                share = float(np.asarray(m.mix_last, float)[idx].sum())
                if share >= rule.min_share - 1e-9:
                    rows.append(_alert(
                        sid, m.speaker, rule, last_q,
                        f"{'/'.join(rule.labels)} share {share:.2f} in the last quarter "
                        f"(from {last_q:.1f} s), threshold {rule.min_share:.2f}",
                        _dominant(m.mix_last, rule.labels), rules))
            elif rule.kind == "ends_worse" and m.trend == "worsening":
                rows.append(_alert(
                    sid, m.speaker, rule, last_q,
                    f"negative share rose from {m.neg_first:.2f} in the first quarter to "
                    f"{m.neg_last:.2f} in the last ({m.neg_delta:+.2f}; threshold "
                    f"{rules.trend_threshold:.2f})",
                    _dominant(m.mix_last, ("angry", "disgusted", "fearful", "sad")), rules))
            elif rule.kind == "unreliable" and m.unreliable:
                low = part[[fallback_action(lab, c, rules.confidence_threshold)
                            == REQUEST_CLARIFICATION
                            for lab, c in zip(part.label, part.confidence)]]
                rows.append(_alert(
                    sid, m.speaker, rule, low.start_s.iloc[0] if len(low) else 0.0,
                    f"unreliable audio: {m.low_conf_share:.0%} of segments need clarification "
                    f"(threshold {rules.unreliable_share:.0%}); likely cause: "
                    f"{m.unreliable_cause}", "unknown", rules))
    return frame(rows)


def volatility_alerts(sid: str, seg: pd.DataFrame, metrics: pd.DataFrame,
                      rolling: pd.DataFrame, reference: dict[str, list[float]],
                      rules: Rules) -> pd.DataFrame:
    """volatility_percentile rules against `reference`: earlier sessions' volatility by role.

    The alert points at the segment where the rolling volatility peaks.
    """
    seg = order(seg).merge(rolling[["segment_id", "rolling_volatility"]], on="segment_id")
    rows: list[dict] = []
    for rule in (r for r in rules.alerts if r.kind == "volatility_percentile"):
        for m in metrics[metrics.speaker != ALL].itertuples(index=False):
            if not rule.watches(m.speaker) or m.volatility is None or pd.isna(m.volatility):
                continue
            ref = reference.get(m.speaker, [])
            if len(ref) < rule.min_reference:
                continue
            limit = float(np.percentile(np.asarray(ref, float), rule.percentile))
            if m.volatility <= limit:
                continue
            part = seg[seg.speaker == m.speaker]
            peak = part.loc[part.rolling_volatility.idxmax()] \
                if part.rolling_volatility.notna().any() else part.iloc[0]
            rows.append(_alert(
                sid, m.speaker, rule, peak.start_s,
                f"volatility {m.volatility:.3f} above the {rule.percentile:g}th percentile "
                f"{limit:.3f} of {len(ref)} earlier {m.speaker} sessions; peak at "
                f"{peak.start_s:.1f} s", peak.label, rules))
    return frame(rows)


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    return df.sort_values(["t_s", "speaker", "rule"], kind="stable").reset_index(drop=True)
