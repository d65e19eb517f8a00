"""Alert rules evaluated over one session's metrics and segments; alerts are rows, not pop-ups.

Each alert names the emotion behind it and the suggested response for that emotion (seed §4.1).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from core.base.labels import LABELS, NEGATIVE
from core.analysis.metrics import ALL, as_seq, low_confidence, quarter_masks
from core.analysis.prosody import semitones, speaker_raised
# Rules and rule objects (core.analysis.rules) arrive as arguments: core.analysis.rules checks a rules file's
# kinds against ALERT_KINDS here, so this module does not import it back.

ALERT_COLUMNS = ["session_id", "speaker", "rule", "t_s", "severity", "detail", "emotion",
                 "suggested_response", "suggested_response_zh"]


def _alert(sid: str, speaker: str, rule, t_s: float, detail: str, emotion: str | None,
           rules) -> dict:
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


def _streak(sid, sp, q, rule, rules) -> list[dict]:
    out = []
    for i, n in streaks(q.label, rule.labels):
        if n < rule.min_count:
            continue
        run = q.label[i:i + n].tolist()
        emotion = max(rule.labels, key=lambda lab: (run.count(lab), -LABELS.index(lab)))
        what = emotion if len(rule.labels) == 1 else "/".join(rule.labels)
        out.append(_alert(sid, sp, rule, q.start[i],
                          f"{what} in {n} consecutive segments from {q.start[i]:.1f} s "
                          f"to {q.end[i + n - 1]:.1f} s", emotion, rules))
    return out


def _last_quarter_start(part, duration_s: float) -> float:
    """Where the speaker's own last-quarter speech starts: the start of their first segment
    whose midpoint lies in the last quarter (the segments the share was measured on), so a
    click lands on this speaker's voice, not on the quarter boundary inside someone else's."""
    last = np.flatnonzero(quarter_masks(part.start, part.end, duration_s)[1])
    return float(part.start[last[0]]) if last.size else 0.75 * duration_s


def _last_quarter_share(sid, sp, part, m, rule, rules, duration_s) -> list[dict]:
    if not _present(m["neg_last"]):
        return []
    idx = [LABELS.index(x) for x in rule.labels]
    share = float(np.asarray(m["mix_last"], float)[idx].sum())
    if share < rule.min_share - 1e-9:
        return []
    last_q = 0.75 * duration_s
    return [_alert(sid, sp, rule, _last_quarter_start(part, duration_s),
                   f"{'/'.join(rule.labels)} share {share:.2f} in the last quarter "
                   f"(from {last_q:.1f} s), threshold {rule.min_share:.2f}",
                   _dominant(m["mix_last"], rule.labels), rules)]


def _session_share(sid, sp, part, m, rule, rules, duration_s) -> list[dict]:
    """Share of the speaker's whole talk time under `labels` (a diary entry as a whole)."""
    if not _present(m["neg_share"]) or len(part) == 0:
        return []
    idx = [LABELS.index(x) for x in rule.labels]
    share = float(np.asarray(m["mix"], float)[idx].sum())
    if share < rule.min_share - 1e-9:
        return []
    first = np.flatnonzero(np.isin(part.label, rule.labels))
    return [_alert(sid, sp, rule, part.start[first[0]] if first.size else part.start[0],
                   f"{'/'.join(rule.labels)} share {share:.2f} of all speech, threshold "
                   f"{rule.min_share:.2f}", _dominant(m["mix"], rule.labels), rules)]


def _ends_worse(sid, sp, part, m, rule, rules, duration_s) -> list[dict]:
    if m["trend"] != "worsening":
        return []
    return [_alert(sid, sp, rule, _last_quarter_start(part, duration_s),
                   f"negative share rose from {m['neg_first']:.2f} in the first quarter to "
                   f"{m['neg_last']:.2f} in the last ({m['neg_delta']:+.2f}; threshold "
                   f"{rules.trend_threshold:.2f})", _dominant(m["mix_last"], NEGATIVE), rules)]


def _unreliable(sid, sp, part, m, rule, rules, duration_s) -> list[dict]:
    if not m["unreliable"]:
        return []
    low = np.flatnonzero(low_confidence(part, rules.confidence_threshold))
    return [_alert(sid, sp, rule, part.start[low[0]] if low.size else 0.0,
                   f"unreliable audio: {m['low_conf_share']:.0%} of segments need "
                   f"clarification (threshold {rules.unreliable_share:.0%}); likely cause: "
                   f"{m['unreliable_cause']}", "unknown", rules)]


def _streak_check(sid, sp, part, m, rule, rules, duration_s) -> list[dict]:
    return _streak(sid, sp, part, rule, rules)


def _raised_voice(sid, sp, part, m, rule, rules, duration_s) -> list[dict]:
    """Runs of at least `min_count` consecutive segments where the speaker's voice is raised
    (core.analysis.prosody: pitch and loudness both well above their own median in the session)."""
    raised, p_med, l_med = speaker_raised(part.pitch, part.loudness, rule.pitch_semitones,
                                          rule.loudness_db)
    out = []
    for i, n in streaks(raised.tolist(), {True}):
        if n < rule.min_count:
            continue
        run = slice(i, i + n)
        up = float(np.max(semitones(part.pitch[run], p_med)))
        louder = float(np.max(part.loudness[run] - l_med))
        labels = part.label[run].tolist()
        emotion = max(dict.fromkeys(labels), key=lambda lab: (labels.count(lab),
                                                              -LABELS.index(lab)))
        out.append(_alert(sid, sp, rule, part.start[i],
                          f"raised voice in {n} segment(s) from {part.start[i]:.1f} s to "
                          f"{part.end[i + n - 1]:.1f} s: pitch up to {up:+.1f} semitones and "
                          f"loudness up to {louder:+.1f} dB over the {sp}'s median "
                          f"({p_med:.0f} Hz, {l_med:.1f} dBFS); thresholds "
                          f"{rule.pitch_semitones:g} semitones and {rule.loudness_db:g} dB",
                          emotion, rules))
    return out


# A check over one speaker of one session: (session_id, speaker, that speaker's segments,
# their metric row, the rule, all rules, session duration) → alert rows (built with _alert).
Check = Callable[..., list[dict]]


@dataclass(frozen=True)
class AlertKind:
    name: str
    check: Check | None  # None: store-relative (earlier sessions' values: volatility_alerts)
    live: bool = False  # judged on a live stream as utterances close, over those so far;
    #                     otherwise only over the whole session (its final message)
    needs_labels: bool = False  # a rule of this kind must name `labels`


# The one registry of alert kinds: rules files are checked against it, ingest, recompute and
# the what-if view judge through it (core.analysis.analytics.judge), and so does the live stream
# (core.analysis.analytics.judge_live).
ALERT_KINDS: dict[str, AlertKind] = {}


def register_alert_kind(name: str, *, live: bool = False, needs_labels: bool = False):
    """Decorator for a check: `name` becomes a kind `[[alerts]]` rules may use."""
    def add(check: Check | None) -> Check | None:
        ALERT_KINDS[name] = AlertKind(name, check, live, needs_labels)
        return check
    return add


def unregister_alert_kind(name: str) -> None:
    ALERT_KINDS.pop(name, None)


register_alert_kind("streak", live=True, needs_labels=True)(_streak_check)
register_alert_kind("last_quarter_share", needs_labels=True)(_last_quarter_share)
register_alert_kind("session_share")(_session_share)
register_alert_kind("ends_worse")(_ends_worse)
register_alert_kind("unreliable")(_unreliable)
register_alert_kind("volatility_percentile", live=True)(None)
register_alert_kind("raised_voice", live=True)(_raised_voice)


def session_checks() -> dict[str, Check]:
    """Kinds judged from the session alone."""
    return {k.name: k.check for k in ALERT_KINDS.values() if k.check is not None}


def store_relative() -> tuple[str, ...]:
    """Kinds judged against earlier sessions (volatility_alerts)."""
    return tuple(k.name for k in ALERT_KINDS.values() if k.check is None)


def session_alerts(sid: str, seg, metrics, duration_s: float, rules,
                   live_only: bool = False) -> list[dict]:
    """Every rule that needs only this session (the kinds with a check); `live_only`: only
    the kinds a live stream judges as it goes.

    `metrics`: metric rows (dicts, or a DataFrame of METRIC_COLUMNS) of this session.
    """
    q = as_seq(seg)
    rows: list[dict] = []
    for m in _records(metrics):
        sp = m["speaker"]
        if sp == ALL:
            continue
        part = q.take(np.flatnonzero(q.speaker == sp))
        for rule in rules.alerts:
            kind = ALERT_KINDS.get(rule.kind)
            check = kind.check if kind is not None and (kind.live or not live_only) else None
            if check is not None and rule.watches(sp):
                rows += check(sid, sp, part, m, rule, rules, duration_s)
    return rows


class Ranked:
    """One role's reference volatility, sorted once it is asked often, so a percentile is a
    lookup rather than a partition of every earlier session's value (np.percentile's cost,
    which grows with the store, on each session judged). `percentile` gives np.percentile's
    "linear" result to the bit. The first SORT_AFTER percentiles are np.percentile's own: a
    one-session commit asks once per speaker, and sorting a large store's values for that
    would cost more than it saves. Sorted, the values are a Python list: a session adds one
    or two, which `bisect.insort` places in one call."""

    SORT_AFTER = 2

    def __init__(self, values=()):
        self._raw: np.ndarray | None = np.asarray(values, dtype=float).ravel()
        self._sorted: list[float] | None = None
        self._asked = 0

    def __len__(self) -> int:
        return len(self._sorted) if self._sorted is not None else self._raw.size

    def add(self, new) -> None:
        new = np.asarray(new, dtype=float).ravel()
        if self._sorted is None:
            self._raw = np.concatenate([self._raw, new])
        elif new.size > 16:  # a store's worth: one merge of two sorted runs
            self._sorted = sorted(self._sorted + sorted(new.tolist()))
        else:
            for v in new.tolist():
                bisect.insort(self._sorted, v)

    def percentile(self, q: float) -> float:
        if self._sorted is None:
            self._asked += 1
            if self._asked <= self.SORT_AFTER or not self._raw.size:
                return float(np.percentile(self._raw, q)) if self._raw.size else float("nan")
            self._sorted, self._raw = np.sort(self._raw).tolist(), None
        # numpy's arithmetic step by step: index (n - 1) * q / 100, then _lerp, which takes
        # the upper end back for a fraction of 0.5 or more.
        a, n = self._sorted, len(self._sorted)
        at = (n - 1) * (q / 100)
        if at >= n - 1:
            return a[-1]
        lo = math.floor(at)
        t = at - lo
        x, y = a[lo], a[lo + 1]
        return y - (y - x) * (1 - t) if t >= 0.5 else x + (y - x) * t


def _percentile(ref, q: float) -> float:
    if isinstance(ref, Ranked):
        return ref.percentile(q)
    return float(np.percentile(np.asarray(ref, float), q))


def volatility_alerts(sid: str, seg, metrics, rolling: np.ndarray,
                      reference: dict[str, list[float]], rules) -> list[dict]:
    """volatility_percentile rules against `reference`: earlier sessions' volatility by role
    (values in any order, or a Ranked).

    `rolling`: the rolling volatility of each segment of `as_seq(seg)`, in that order.
    The alert points at the segment where the speaker's rolling volatility peaks.
    """
    q = as_seq(seg)
    rolling = np.asarray(rolling, float)
    rows: list[dict] = []
    relative = store_relative()
    for rule in (r for r in rules.alerts if r.kind in relative):
        for m in _records(metrics):
            sp, vol = m["speaker"], m["volatility"]
            if sp == ALL or not rule.watches(sp) or not _present(vol):
                continue
            ref = reference.get(sp, [])
            if len(ref) < rule.min_reference:
                continue
            limit = _percentile(ref, rule.percentile)
            if vol <= limit:
                continue
            idx = np.flatnonzero(q.speaker == sp)
            r = rolling[idx]
            peak = idx[int(np.nanargmax(r))] if np.isfinite(r).any() else idx[0]
            rows.append(_alert(
                sid, sp, rule, q.start[peak],
                f"volatility {vol:.3f} above the {rule.percentile:g}th percentile "
                f"{limit:.3f} of {len(ref)} earlier {sp} sessions; peak at "
                f"{q.start[peak]:.1f} s", q.label[peak], rules))
    return rows


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v))


def _records(metrics) -> list[dict]:
    return metrics.to_dict("records") if isinstance(metrics, pd.DataFrame) else list(metrics)


def frame(rows: list[dict]) -> pd.DataFrame:
    """Alert rows as a DataFrame in a fixed order: time, then speaker, then rule."""
    rows = sorted(rows, key=lambda r: (r["t_s"], r["speaker"], r["rule"]))
    return pd.DataFrame(rows, columns=ALERT_COLUMNS)
