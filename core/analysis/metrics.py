"""Per-session metrics over one session's segments: volatility, trend, conversation, confidence.

Every function takes plain arrays or a DataFrame shaped like the `segments` table and returns
plain values, so each metric can be checked by hand. docs/metrics.md defines them in words.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.base.labels import LABELS, NEGATIVE, UNCERTAIN

ALL = "all"  # the speaker value of the whole-session row in session_metrics
REQUEST_CLARIFICATION = "request_clarification"
_NEG_IDX = [LABELS.index(x) for x in NEGATIVE]
_EPS = 1e-9  # thresholds are inclusive; shields "0.7 - 0.5 >= 0.2" from rounding
CAUSES = {"too_quiet": "too quiet", "clipped": "clipped", "too_short": "too short",
          "narrowband": "telephone-band audio (nothing above 4 kHz)"}

METRIC_COLUMNS = [
    "session_id", "speaker", "n_segments", "talk_s", "turns", "interruptions", "overlap_s",
    "silence_s", "longest_silence_s", "volatility", "rolling_volatility_max",
    "score_volatility", "label_switches", "switches_per_min", "mix", "neg_share", "mix_first",
    "mix_last", "neg_first", "neg_last", "neg_delta", "trend", "low_conf_n", "low_conf_share",
    "unreliable", "unreliable_cause", "rules_digest", "rule_set"]


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


# -- one session ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Seq:
    """One session's segments as arrays, in time order (ties: channel, then id)."""
    segment_id: np.ndarray
    channel: np.ndarray
    speaker: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    label_idx: np.ndarray
    confidence: np.ndarray
    scores: np.ndarray  # (n, 9)
    emb: np.ndarray | None  # (n, D); None when any segment lacks an embedding
    flags: list
    # How it sounded (core/analysis/prosody.py): NaN where not measured
    pitch: np.ndarray | None = None  # Hz
    loudness: np.ndarray | None = None  # dBFS

    def __post_init__(self):
        for f in ("pitch", "loudness"):
            if getattr(self, f) is None:
                object.__setattr__(self, f, np.full(len(self.start), np.nan))

    def __len__(self) -> int:
        return len(self.start)

    def take(self, idx) -> "Seq":
        idx = np.asarray(idx, dtype=int)
        return Seq(*(getattr(self, f)[idx] for f in _ARRAYS),
                   emb=None if self.emb is None else self.emb[idx],
                   flags=[self.flags[i] for i in idx], pitch=self.pitch[idx],
                   loudness=self.loudness[idx])


_ARRAYS = ("segment_id", "channel", "speaker", "start", "end", "label", "label_idx",
           "confidence", "scores")
_LABEL_IDX = {lab: i for i, lab in enumerate(LABELS)}


def as_seq(seg, presorted: bool = False) -> Seq:
    """A segments DataFrame (columns as in the `segments` table) → a time-ordered Seq.

    `presorted`: the rows already come in that order (or in it within each session, for a
    Seq of many sessions that is then cut with `take`)."""
    if isinstance(seg, Seq):
        return seg
    n = len(seg)
    # Scores are optional: re-judging alerts from stored rows never needs them.
    has_scores = "scores" in seg
    col = {c: seg[c].to_numpy() for c in ("segment_id", "channel", "speaker", "start_s", "end_s",
                                          "label", "confidence", "scores") if c in seg}
    sid = col["segment_id"].astype(str)
    start = col["start_s"].astype(float)
    channel = col["channel"].astype(int)
    idx = np.arange(n) if presorted else np.array(
        sorted(range(n), key=lambda i: (start[i], channel[i], sid[i])), dtype=int)
    labels = col["label"].astype(object)[idx]
    emb = None
    if "embedding" in seg and n:
        vals = seg["embedding"].to_numpy(object)[idx]
        if all(v is not None and len(v) > 0 for v in vals):
            emb = np.stack(vals.tolist()).astype(np.float64)
    flags = seg["flags"].to_numpy(object)[idx].tolist() if "flags" in seg else [None] * n
    measured = {c: pd.to_numeric(seg[c], errors="coerce").to_numpy(float)[idx] if c in seg
                else np.full(n, np.nan) for c in ("pitch_hz", "loudness_dbfs")}
    return Seq(
        segment_id=sid.astype(object)[idx], channel=channel[idx],
        speaker=col["speaker"].astype(object)[idx], start=start[idx],
        end=col["end_s"].astype(float)[idx], label=labels,
        label_idx=np.array([_LABEL_IDX[x] for x in labels], dtype=int),
        confidence=col["confidence"].astype(float)[idx],
        scores=np.stack(col["scores"][idx].tolist()).astype(np.float64) if n and has_scores
        else np.zeros((n, len(LABELS))),
        emb=emb, flags=flags, pitch=measured["pitch_hz"], loudness=measured["loudness_dbfs"])


def order(seg: pd.DataFrame) -> pd.DataFrame:
    """Segments in the same time order as `as_seq`."""
    return seg.sort_values(["start_s", "channel", "segment_id"], kind="stable") \
        .reset_index(drop=True)


def interruptions(q: Seq) -> np.ndarray:
    """Per segment: does it start while another speaker's segment is under way (strictly)?"""
    s, e, sp = q.start, q.end, q.speaker
    if len(q) == 0:
        return np.zeros(0, bool)
    other = sp[None, :] != sp[:, None]
    return (other & (s[None, :] < s[:, None]) & (e[None, :] > s[:, None])).any(axis=1)


def turns(q: Seq) -> dict[str, int]:
    """Per speaker, the number of runs of consecutive segments (by start) that are theirs."""
    out: dict[str, int] = {}
    for i, sp in enumerate(q.speaker):
        if i == 0 or sp != q.speaker[i - 1]:
            out[sp] = out.get(sp, 0) + 1
    return out


_UNCERTAIN_AT = np.array([lab in UNCERTAIN for lab in LABELS])  # by label index


def low_confidence(q: Seq, threshold: float) -> np.ndarray:
    return _UNCERTAIN_AT[q.label_idx] | (q.confidence < threshold)


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


def _mix(q: Seq, mask=None) -> tuple[np.ndarray, float]:
    dur = np.clip(q.end - q.start, 0, None)
    idx = q.label_idx
    if mask is not None:
        dur, idx = dur[mask], idx[mask]
    m = np.bincount(idx, weights=dur, minlength=len(LABELS)).astype(float)
    tot = float(dur.sum())
    return (m / tot if tot > 0 else m), tot


def speaker_parts(q: Seq, window: int) -> dict[str, dict]:
    """Per speaker (sorted): indices into q and the sequence measures of their own segments."""
    parts = {}
    for sp in sorted(set(q.speaker.tolist())):
        idx = np.flatnonzero(q.speaker == sp)
        part = q.take(idx)
        parts[sp] = {
            "idx": idx, "seq": part,
            "dists": pair_distances(part.emb) if part.emb is not None else np.zeros(0),
            "steps": score_steps(part.scores),
            "switches": label_switches(part.label),
            "roll": rolling_volatility(part.emb, window) if part.emb is not None
            else np.full(len(part), np.nan),
            "spans": union(zip(part.start, part.end)),
        }
    return parts


def rolling_column(q: Seq, parts: dict[str, dict]) -> np.ndarray:
    """Each speaker's rolling volatility placed back at their segments' positions in q."""
    roll = np.full(len(q), np.nan)
    for p in parts.values():
        roll[p["idx"]] = p["roll"]
    return roll


def segment_updates(seg, window: int, threshold: float, parts=None) -> pd.DataFrame:
    """rolling_volatility (within each speaker's own sequence) and fallback_action per segment."""
    q = as_seq(seg)
    parts = parts if parts is not None else speaker_parts(q, window)
    low = low_confidence(q, threshold)
    return pd.DataFrame({
        "segment_id": q.segment_id,
        "rolling_volatility": rolling_column(q, parts),
        "fallback_action": np.where(low, REQUEST_CLARIFICATION, None),
    })


def _row(sid: str, speaker: str, q: Seq, duration_s: float, rules, dists: np.ndarray,
         steps: np.ndarray, switches: int, roll: np.ndarray, channel_flags: list) -> dict:
    m, tot = _mix(q)
    first, last = quarter_masks(q.start, q.end, duration_s)
    m_first, t_first = _mix(q, first)
    m_last, t_last = _mix(q, last)
    n_first = negative_share(m_first) if t_first > 0 else None
    n_last = negative_share(m_last) if t_last > 0 else None
    delta = n_last - n_first if t_first > 0 and t_last > 0 else None
    low = low_confidence(q, rules.confidence_threshold)
    share = float(low.mean()) if len(q) else None
    minutes = duration_s / 60
    finite = roll[~np.isnan(roll)]
    return {
        "session_id": sid, "speaker": speaker, "n_segments": int(len(q)),
        "talk_s": total(union(zip(q.start, q.end))),
        "volatility": float(dists.mean()) if dists.size else None,
        "rolling_volatility_max": float(finite.max()) if finite.size else None,
        "score_volatility": float(steps.mean()) if steps.size else None,
        "label_switches": int(switches),
        "switches_per_min": switches / minutes if minutes > 0 else None,
        "mix": m.tolist(), "neg_share": negative_share(m) if tot > 0 else None,
        "mix_first": m_first.tolist(), "mix_last": m_last.tolist(),
        "neg_first": n_first, "neg_last": n_last, "neg_delta": delta,
        "low_conf_n": int(low.sum()), "low_conf_share": share,
        **judged_fields(delta, share, channel_flags, [q.flags[i] for i in np.flatnonzero(low)],
                        rules),
        "rules_digest": rules.digest, "rule_set": rules.name,
    }


def judged_fields(neg_delta, low_conf_share, channel_flags, low_segment_flags, rules) -> dict:
    """The metric fields a threshold decides (trend, unreliable and its cause), from the measured
    values: ingest computes them here, and the what-if re-judges stored rows here too."""
    unreliable = low_conf_share is not None and not pd.isna(low_conf_share) and \
        low_conf_share >= rules.unreliable_share - _EPS
    present = neg_delta is not None and not pd.isna(neg_delta)
    return {"trend": trend(float(neg_delta), rules.trend_threshold) if present else None,
            "unreliable": bool(unreliable),
            "unreliable_cause": unreliable_cause(channel_flags, low_segment_flags)
            if unreliable else None}


def channel_list(channels) -> list[tuple[str, tuple]]:
    """(speaker, flags) per channel from a `channels` DataFrame (or None)."""
    if channels is None or len(channels) == 0:
        return []
    return [(sp, tuple(f) if f is not None else ()) for sp, f in
            zip(channels["speaker"], channels["flags"])]


def metric_rows(sid: str, q: Seq, channels: list[tuple[str, tuple]], duration_s: float,
                rules, parts: dict[str, dict]) -> list[dict]:
    """One row per speaker (sorted) and the whole-session row (speaker = "all") last."""
    empty = q.take([])
    for sp, _ in channels:  # a channel with no speech still gets its row
        parts.setdefault(sp, {"idx": np.zeros(0, int), "seq": empty, "dists": np.zeros(0),
                              "steps": np.zeros(0), "switches": 0, "roll": np.zeros(0),
                              "spans": []})
    speakers = sorted(parts)
    two_party = len(speakers) >= 2
    hits = interruptions(q) if two_party else np.zeros(len(q), bool)
    turn_n = turns(q)
    rows = []
    for sp in speakers:
        p = parts[sp]
        row = _row(sid, sp, p["seq"], duration_s, rules, p["dists"], p["steps"], p["switches"],
                   p["roll"], [f for s, f in channels if s == sp])
        others = union([s for o in speakers if o != sp for s in parts[o]["spans"]])
        row.update(turns=turn_n.get(sp, 0),
                   interruptions=int(hits[p["idx"]].sum()) if two_party else None,
                   overlap_s=total(intersect(p["spans"], others)) if two_party else None,
                   silence_s=None, longest_silence_s=None)
        rows.append(row)
    cat = (lambda key: np.concatenate([parts[s][key] for s in speakers])
           if speakers else np.zeros(0))
    every = union(zip(q.start, q.end))
    row = _row(sid, ALL, q, duration_s, rules, cat("dists"), cat("steps"),
               sum(parts[s]["switches"] for s in speakers), cat("roll"),
               [f for _, f in channels])
    row.update(turns=int(sum(turn_n.values())),
               interruptions=int(hits.sum()) if two_party else None,
               overlap_s=overlap_time({s: parts[s]["spans"] for s in speakers})
               if two_party else None,
               silence_s=max(duration_s - total(every), 0.0),
               longest_silence_s=max(gaps(every), default=0.0))
    rows.append(row)
    return rows


def session_metrics(session_id: str, seg, channels: pd.DataFrame | None,
                    duration_s: float | None, rules) -> pd.DataFrame:
    """One row per speaker plus the whole-session row (speaker = "all"), METRIC_COLUMNS."""
    q = as_seq(seg)
    if not duration_s or duration_s <= 0:
        duration_s = float(q.end.max()) if len(q) else 0.0
    rows = metric_rows(session_id, q, channel_list(channels), duration_s, rules,
                       speaker_parts(q, rules.window))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
