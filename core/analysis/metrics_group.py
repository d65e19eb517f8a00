"""core.analysis.metrics' `metric_rows` for a whole group of sessions in a few numpy passes.

The writer analyses every group it stores at once: talk-time mixes, quarter mixes, negative
shares, talk time, silences, volatility means, label switches and low-confidence counts are
computed for every (session, speaker) row and every whole-session row of the group together.
They equal what `metric_rows` gives one session at a time, to the last bit (a test compares
the two paths), so the arithmetic keeps each of its sums: a Python `sum` or a `bincount` is
added in order from zero (`np.bincount` does that per bin), a numpy `.sum()`/`.mean()` adds
pairwise (reproduced by summing rows of equal length as one 2-D block, `_numpy_sums`).
What is still done per session is what only two-party sessions need (interruptions, overlap).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.base.labels import LABELS
from core.analysis.metrics import (_NEG_IDX, ALL, interruptions, judged_fields, overlap_time,
                                   union)

N_LABELS = len(LABELS)


@dataclass
class _Times:
    """What metrics.interruptions reads of a session's segments (in time order)."""
    start: np.ndarray
    end: np.ndarray
    speaker: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class Unit:
    """One metric row to be: a speaker of a session, or the whole session (speaker "all")."""
    session: int
    speaker: str
    rows: np.ndarray  # its segments (indices into the group's arrays), in time order
    dists: np.ndarray  # its consecutive-embedding distances (empty without embeddings)
    steps: np.ndarray  # its consecutive-score distances
    roll: np.ndarray  # its segments' rolling volatility
    switches: int


def _numpy_sums(values: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """`values[a:a + n].sum()` for each (a, n), with numpy's own pairwise order: slices of
    one length are stacked and summed along their rows, which numpy adds as it adds one."""
    out = np.zeros(len(lens))
    for n in np.unique(lens):
        if n == 0:
            continue
        sel = np.flatnonzero(lens == n)
        out[sel] = values[starts[sel][:, None] + np.arange(n)[None, :]].sum(axis=1)
    return out


def _ordered_sums(values: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """Python's `sum` of each unit's values in order (from zero): bincount adds them so."""
    return np.bincount(unit, weights=values, minlength=n_units).astype(float)


def group_metric_rows(units: list[Unit], sessions: list, durations: list[float],
                      seg, low: np.ndarray, two_party: list[bool]) -> list[dict]:
    """The metric rows of `units` (speakers sorted, then "all", session after session), as
    `metric_rows` writes them. `seg`: the group's arrays (core.analysis.analytics.GroupSegments, with
    `label_idx`); `low`: low confidence per segment; `sessions[i]`: its GroupSession."""
    u_n = len(units)
    lens = np.array([len(u.rows) for u in units], dtype=int)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(int) if u_n else lens
    rows = np.concatenate([u.rows for u in units]).astype(int) if u_n else np.zeros(0, int)
    unit = np.repeat(np.arange(u_n), lens)
    start, end = seg.start[rows], seg.end[rows]
    label = seg.label_idx[rows]
    dur_s = np.array([durations[u.session] for u in units], dtype=float)

    # Talk-time mixes: all speech, the first quarter, the last quarter.
    seg_dur = np.clip(end - start, 0, None)
    mid = (start + end) / 2
    first_q = mid < dur_s[unit] / 4
    last_q = mid >= 3 * dur_s[unit] / 4

    def mixes(mask):
        m = np.bincount(unit[mask] * N_LABELS + label[mask], weights=seg_dur[mask],
                        minlength=u_n * N_LABELS).astype(float).reshape(u_n, N_LABELS)
        kept = np.bincount(unit[mask], minlength=u_n)
        tot = _numpy_sums(seg_dur[mask], np.concatenate([[0], np.cumsum(kept)[:-1]]).astype(int),
                          kept)
        shares = np.divide(m, tot[:, None], out=m.copy(), where=tot[:, None] > 0)
        return shares, tot, shares[:, _NEG_IDX].sum(axis=1)

    everything = np.ones(len(rows), bool)
    mix, tot, neg = mixes(everything)
    mix_f, tot_f, neg_f = mixes(first_q)
    mix_l, tot_l, neg_l = mixes(last_q)

    # Speech as a union of spans per unit (as metrics.union: sorted by start, touching spans
    # merged), its total in order, and the gaps between its stretches.
    valid = end > start
    reach = pd.Series(np.where(valid, end, -np.inf)).groupby(unit).cummax().to_numpy()
    before = np.full(len(rows), -np.inf)  # furthest end of the unit's earlier spans
    inner = np.ones(len(rows), bool)
    inner[starts[lens > 0]] = False
    before[1:] = np.where(inner[1:], reach[:-1], -np.inf)
    opens = valid & ((before == -np.inf) | (start > before))
    stretch = np.cumsum(opens) - 1  # which stretch of its unit each valid row belongs to
    s_start = start[opens]
    s_unit = unit[opens]
    s_end = np.full(len(s_start), -np.inf)
    np.maximum.at(s_end, stretch[valid], end[valid])
    talk = _ordered_sums(s_end - s_start, s_unit, u_n)
    gap = s_start[1:] - s_end[:-1]
    same_unit = s_unit[1:] == s_unit[:-1]
    longest = np.full(u_n, -np.inf)
    np.maximum.at(longest, s_unit[1:][same_unit], gap[same_unit])

    low_n = np.bincount(unit[low[rows]], minlength=u_n)

    out = []
    for k, u in enumerate(units):
        s = sessions[u.session]
        rules, duration = s.rules, durations[u.session]
        n = int(lens[k])
        minutes = duration / 60
        finite = u.roll[~np.isnan(u.roll)]
        has_f, has_l = tot_f[k] > 0, tot_l[k] > 0
        n_first = float(neg_f[k]) if has_f else None
        n_last = float(neg_l[k]) if has_l else None
        delta = n_last - n_first if has_f and has_l else None
        share = float(low_n[k] / n) if n else None
        flags = [f for sp, f in s.channels if u.speaker == ALL or sp == u.speaker]
        low_rows = rows[starts[k]:starts[k] + n][low[rows[starts[k]:starts[k] + n]]]
        row = {
            "session_id": s.session_id, "speaker": u.speaker, "n_segments": n,
            "talk_s": float(talk[k]),
            "volatility": float(u.dists.mean()) if u.dists.size else None,
            "rolling_volatility_max": float(finite.max()) if finite.size else None,
            "score_volatility": float(u.steps.mean()) if u.steps.size else None,
            "label_switches": int(u.switches),
            "switches_per_min": u.switches / minutes if minutes > 0 else None,
            "mix": mix[k].tolist(), "neg_share": float(neg[k]) if tot[k] > 0 else None,
            "mix_first": mix_f[k].tolist(), "mix_last": mix_l[k].tolist(),
            "neg_first": n_first, "neg_last": n_last, "neg_delta": delta,
            "low_conf_n": int(low_n[k]), "low_conf_share": share,
            **judged_fields(delta, share, flags, [seg.flags[r] for r in low_rows], rules),
            "rules_digest": rules.digest, "rule_set": rules.name,
        }
        if u.speaker == ALL:
            row.update(silence_s=max(duration - float(talk[k]), 0.0),
                       longest_silence_s=float(longest[k]) if longest[k] > -np.inf else 0.0)
        else:
            row.update(silence_s=None, longest_silence_s=None)
        out.append(row)
    bounds = np.searchsorted(s_unit, np.arange(u_n + 1))  # each unit's stretches
    stretches = list(zip(s_start.tolist(), s_end.tolist()))
    spans = [stretches[bounds[k]:bounds[k + 1]] for k in range(u_n)]
    _conversation(units, out, seg, two_party, spans)
    return out


def _conversation(units, out, seg, two_party, spans) -> None:
    """turns, interruptions and overlap_s of each row: per session, as metric_rows (`spans`:
    each unit's speech stretches, metrics.union's)."""
    k = 0
    while k < len(units):
        i = units[k].session
        j = k
        while j < len(units) and units[j].session == i:
            j += 1
        every = units[j - 1]  # the session's "all" unit: its segments in time order
        sp = seg.speaker[every.rows]
        turn_at = np.ones(len(sp), bool)
        turn_at[1:] = sp[1:] != sp[:-1]
        turn_n: dict[str, int] = {}
        for who in sp[turn_at].tolist():
            turn_n[who] = turn_n.get(who, 0) + 1
        if two_party[i]:
            hits = interruptions(_Times(seg.start[every.rows], seg.end[every.rows], sp))
            by_speaker = {u.speaker: spans[m] for m, u in enumerate(units[k:j - 1], k)}
        for u, row in zip(units[k:j], out[k:j]):
            if u.speaker == ALL:
                row.update(turns=int(sum(turn_n.values())),
                           interruptions=int(hits.sum()) if two_party[i] else None,
                           overlap_s=overlap_time(by_speaker) if two_party[i] else None)
                continue
            if two_party[i]:
                mine = sp == u.speaker
                rest = [ss for o, ss in by_speaker.items() if o != u.speaker]
                # One other speaker: their stretches are a union already.
                others = rest[0] if len(rest) == 1 else union([s for ss in rest for s in ss])
                row.update(turns=turn_n.get(u.speaker, 0), interruptions=int(hits[mine].sum()),
                           overlap_s=_overlap_total(by_speaker[u.speaker], others))
            else:
                row.update(turns=turn_n.get(u.speaker, 0), interruptions=None, overlap_s=None)
        k = j


def _overlap_total(a: list, b: list) -> float:
    """`total(intersect(a, b))` of two unions of disjoint sorted spans, every pair compared at
    once: the overlapping pairs in row-major order are the pieces in time order, summed in that
    order as `total` sums them."""
    if not a or not b:
        return 0.0
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    start = np.maximum(x[:, :1], y[:, 0])
    end = np.minimum(x[:, 1:], y[:, 1])
    keep = start < end
    return float(sum((end[keep] - start[keep]).tolist()))
