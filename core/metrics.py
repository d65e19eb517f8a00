"""Per-session metrics over one session's segments: volatility, trend, conversation, confidence.

Every function takes plain arrays or a DataFrame shaped like the `segments` table and returns
plain values, so each metric can be checked by hand. docs/metrics.md defines them in words.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.labels import LABELS, NEGATIVE, UNCERTAIN

ALL = "all"  # the speaker value of the whole-session row in session_metrics
REQUEST_CLARIFICATION = "request_clarification"
_NEG_IDX = [LABELS.index(x) for x in NEGATIVE]
_EPS = 1e-9  # thresholds are inclusive; shields "0.7 - 0.5 >= 0.2" from rounding
CAUSES = {"too_quiet": "too quiet", "clipped": "clipped", "too_short": "too short"}

METRIC_COLUMNS = [
    "session_id", "speaker", "n_segments", "talk_s", "turns", "interruptions", "overlap_s",
    "silence_s", "longest_silence_s", "volatility", "rolling_volatility_max",
    "score_volatility", "label_switches", "switches_per_min", "mix", "neg_share", "mix_first",
    "mix_last", "neg_first", "neg_last", "neg_delta", "trend", "low_conf_n", "low_conf_share",
    "unreliable", "unreliable_cause", "rules_digest"]


# -- single segments ------------------------------------------------------------------------
def fallback_action(label: str, confidence: float, threshold: float = 0.4) -> str | None:
    """Seed §4.3: an uncertain label or a confidence below the threshold asks to repeat."""
    if label in UNCERTAIN or confidence < threshold:
        return REQUEST_CLARIFICATION
    return None


# -- sequences (one speaker, ordered by start) ----------------------------------------------
def pair_distances(emb: np.ndarray) -> np.ndarray:
    """‖e[i+1] − e[i]‖₂ for each consecutive pair."""
    emb = np.asarray(emb, dtype=np.float64)
    if len(emb) < 2:
        return np.zeros(0)
    return np.linalg.norm(np.diff(emb, axis=0), axis=1)


def volatility(emb: np.ndarray) -> float | None:
    """Mean distance between consecutive embeddings; None with fewer than two."""
    d = pair_distances(emb)
    return float(d.mean()) if d.size else None


def rolling_volatility(emb: np.ndarray, window: int = 5) -> np.ndarray:
    """Per segment, the volatility of the last `window` segments ending at it (NaN for the first).

    The seed keeps the last 5 embeddings and averages their 4 consecutive distances.
    """
    d = pair_distances(emb)
    out = np.full(len(emb), np.nan)
    for i in range(1, len(emb)):
        out[i] = d[max(0, i - window + 1):i].mean()
    return out


def tv_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance between two score distributions: half the L1 distance, 0-1."""
    return float(0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def score_steps(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        return np.zeros(0)
    return 0.5 * np.abs(np.diff(scores, axis=0)).sum(axis=1)


def score_volatility(scores: np.ndarray) -> float | None:
    s = score_steps(scores)
    return float(s.mean()) if s.size else None


def label_switches(labels) -> int:
    labels = list(labels)
    return sum(a != b for a, b in zip(labels[:-1], labels[1:]))


def mix(labels, durations) -> np.ndarray:
    """Share of talk time under each top label, in canonical label order (zeros if no time)."""
    out = np.zeros(len(LABELS))
    for lab, dur in zip(labels, durations):
        out[LABELS.index(lab)] += max(float(dur), 0.0)
    total = out.sum()
    return out / total if total > 0 else out


def negative_share(m: np.ndarray) -> float:
    return float(np.asarray(m)[_NEG_IDX].sum())


def trend(delta: float | None, threshold: float = 0.2) -> str | None:
    """Negative-share change, last quarter minus first: up is worse."""
    if delta is None or np.isnan(delta):
        return None
    if delta >= threshold - _EPS:
        return "worsening"
    if delta <= -threshold + _EPS:
        return "improving"
    return "stable"


def quarter_masks(start_s, end_s, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Segments whose midpoint lies in the first / the last quarter of the session."""
    mid = (np.asarray(start_s, float) + np.asarray(end_s, float)) / 2
    return mid < duration_s / 4, mid >= 3 * duration_s / 4


# -- intervals --------------------------------------------------------------------------------
def union(spans) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted((float(s), float(e)) for s, e in spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def total(spans) -> float:
    return float(sum(e - s for s, e in spans))


def intersect(a, b) -> list[tuple[float, float]]:
    """Intersection of two unions of disjoint spans."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def gaps(spans) -> list[float]:
    """Lengths of the silences between consecutive speech stretches of a union."""
    return [b[0] - a[1] for a, b in zip(spans[:-1], spans[1:])]


def overlap_time(by_speaker: dict[str, list]) -> float:
    """Time during which at least two speakers talk at once."""
    events = sorted([(s, 1) for sp in by_speaker.values() for s, _ in sp] +
                    [(e, -1) for sp in by_speaker.values() for _, e in sp])
    active, last, out = 0, 0.0, 0.0
    for t, step in events:
        if active >= 2:
            out += t - last
        active += step
        last = t
    return float(out)


def interruptions(seg: pd.DataFrame) -> pd.Series:
    """Per segment: does it start while another speaker's segment is under way (strictly)?"""
    starts = seg.start_s.to_numpy(float)
    ends = seg.end_s.to_numpy(float)
    spk = seg.speaker.to_numpy()
    hit = [bool(np.any((spk != spk[i]) & (starts < starts[i]) & (ends > starts[i])))
           for i in range(len(seg))]
    return pd.Series(hit, index=seg.index, dtype=bool)


def turns(seg: pd.DataFrame) -> pd.Series:
    """Per speaker, the number of runs of consecutive segments (by start) that are theirs."""
    spk = seg.speaker.tolist()
    starts = [i for i in range(len(spk)) if i == 0 or spk[i] != spk[i - 1]]
    return pd.Series([spk[i] for i in starts], dtype=object).value_counts()


# -- one session ----------------------------------------------------------------------------
def order(seg: pd.DataFrame) -> pd.DataFrame:
    """Segments in time order; ties by channel then id so every run sees the same order."""
    return seg.sort_values(["start_s", "channel", "segment_id"], kind="stable") \
        .reset_index(drop=True)


def _embeddings(seg: pd.DataFrame) -> np.ndarray | None:
    if "embedding" not in seg or seg.empty:
        return None
    vals = list(seg.embedding)
    if any(v is None or len(v) == 0 for v in vals):
        return None
    return np.stack([np.asarray(v, dtype=np.float64) for v in vals])


def _flags(values) -> list[str]:
    found = set()
    for v in values:
        if v is not None:
            found.update(v)
    return [f for f in CAUSES if f in found]


def unreliable_cause(channel_flags, segment_flags) -> str:
    """Likely reason for unusable audio, from quality flags (channel first, then segments)."""
    codes = _flags(channel_flags) or _flags(segment_flags)
    if not codes:
        return "no quality flag: likely noise, accent or speech the model does not cover"
    return ", ".join(CAUSES[c] for c in codes)


def segment_updates(seg: pd.DataFrame, window: int, threshold: float) -> pd.DataFrame:
    """rolling_volatility (within each speaker's own sequence) and fallback_action per segment."""
    seg = order(seg)
    roll = np.full(len(seg), np.nan)
    for _, idx in seg.groupby("speaker", sort=True).indices.items():
        emb = _embeddings(seg.iloc[idx])
        if emb is not None:
            roll[idx] = rolling_volatility(emb, window)
    return pd.DataFrame({
        "segment_id": seg.segment_id.to_numpy(),
        "rolling_volatility": roll,
        "fallback_action": [fallback_action(lab, conf, threshold)
                            for lab, conf in zip(seg.label, seg.confidence)],
    })


def _row(sid: str, speaker: str, part: pd.DataFrame, duration_s: float, rules,
         dists: np.ndarray, steps: np.ndarray, switches: int, roll: np.ndarray,
         channel_flags: list) -> dict:
    dur = (part.end_s - part.start_s).to_numpy(float)
    m = mix(part.label, dur)
    first, last = quarter_masks(part.start_s, part.end_s, duration_s)
    m_first = mix(part.label[first], dur[first])
    m_last = mix(part.label[last], dur[last])
    has_first, has_last = dur[first].sum() > 0, dur[last].sum() > 0
    n_first = negative_share(m_first) if has_first else None
    n_last = negative_share(m_last) if has_last else None
    delta = n_last - n_first if has_first and has_last else None
    low = np.array([fallback_action(lab, c, rules.confidence_threshold) is not None
                    for lab, c in zip(part.label, part.confidence)], dtype=bool)
    share = float(low.mean()) if len(part) else None
    unreliable = share is not None and share >= rules.unreliable_share - _EPS
    minutes = duration_s / 60
    finite = roll[~np.isnan(roll)]
    return {
        "session_id": sid, "speaker": speaker, "n_segments": int(len(part)),
        "talk_s": total(union(zip(part.start_s, part.end_s))),
        "volatility": float(dists.mean()) if dists.size else None,
        "rolling_volatility_max": float(finite.max()) if finite.size else None,
        "score_volatility": float(steps.mean()) if steps.size else None,
        "label_switches": int(switches),
        "switches_per_min": switches / minutes if minutes > 0 else None,
        "mix": m.tolist(), "neg_share": negative_share(m) if dur.sum() > 0 else None,
        "mix_first": m_first.tolist(), "mix_last": m_last.tolist(),
        "neg_first": n_first, "neg_last": n_last, "neg_delta": delta,
        "trend": trend(delta, rules.trend_threshold),
        "low_conf_n": int(low.sum()), "low_conf_share": share, "unreliable": bool(unreliable),
        "unreliable_cause": unreliable_cause(channel_flags, part["flags"][low] if "flags" in part
                                             else []) if unreliable else None,
        "rules_digest": rules.digest,
    }


def session_metrics(session_id: str, seg: pd.DataFrame, channels: pd.DataFrame | None,
                    duration_s: float | None, rules) -> pd.DataFrame:
    """One row per speaker plus the whole-session row (speaker = "all")."""
    seg = order(seg)
    if not duration_s or duration_s <= 0:
        duration_s = float(seg.end_s.max()) if len(seg) else 0.0
    channels = channels if channels is not None else pd.DataFrame(
        columns=["channel", "speaker", "flags"])
    per: dict[str, dict] = {}
    for speaker, idx in seg.groupby("speaker", sort=True).indices.items():
        part = seg.iloc[idx]
        emb = _embeddings(part)
        per[speaker] = {
            "part": part,
            "dists": pair_distances(emb) if emb is not None else np.zeros(0),
            "steps": score_steps(np.stack(part.scores.map(np.asarray).tolist())),
            "switches": label_switches(part.label),
            "roll": rolling_volatility(emb, rules.window) if emb is not None
            else np.full(len(part), np.nan),
            "spans": union(zip(part.start_s, part.end_s)),
        }
    for sp in channels.speaker.unique():
        per.setdefault(sp, {"part": seg.iloc[0:0], "dists": np.zeros(0), "steps": np.zeros(0),
                            "switches": 0, "roll": np.zeros(0), "spans": []})
    speakers = sorted(per)
    two_party = len(speakers) >= 2
    hits = interruptions(seg) if two_party else pd.Series(False, index=seg.index)
    turn_n = turns(seg)
    rows = []
    for sp in speakers:
        p = per[sp]
        flags = channels["flags"][channels.speaker == sp].tolist()
        row = _row(session_id, sp, p["part"], duration_s, rules, p["dists"], p["steps"],
                   p["switches"], p["roll"], flags)
        others = union([s for o in speakers if o != sp for s in per[o]["spans"]])
        row.update(turns=int(turn_n.get(sp, 0)),
                   interruptions=int(hits[seg.speaker == sp].sum()) if two_party else None,
                   overlap_s=total(intersect(p["spans"], others)) if two_party else None,
                   silence_s=None, longest_silence_s=None)
        rows.append(row)
    cat = (lambda key: np.concatenate([per[s][key] for s in speakers])
           if speakers else np.zeros(0))
    every = union(zip(seg.start_s, seg.end_s))
    row = _row(session_id, ALL, seg, duration_s, rules, cat("dists"), cat("steps"),
               sum(per[s]["switches"] for s in speakers), cat("roll"), channels["flags"].tolist())
    row.update(turns=int(turn_n.sum()),
               interruptions=int(hits.sum()) if two_party else None,
               overlap_s=overlap_time({s: per[s]["spans"] for s in speakers})
               if two_party else None,
               silence_s=max(duration_s - total(every), 0.0),
               longest_silence_s=max(gaps(every), default=0.0))
    rows.append(row)
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
