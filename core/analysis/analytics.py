"""Everything derived from one stored session, in one call, for ingest and recompute alike.

The store-relative rule (volatility above a percentile) compares a session with the sessions
stored *before* it (by ingest time). Ingest sees exactly those; recompute walks the store in
the same order and rebuilds the same reference, so both produce identical rows, and an alert
never appears or vanishes later just because newer sessions arrived.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.analysis import categories
from core.analysis.alerts import Ranked, frame, session_alerts, volatility_alerts
from core.analysis.metrics import (_LABEL_IDX, _UNCERTAIN_AT, ALL, METRIC_COLUMNS,
                                   REQUEST_CLARIFICATION, Seq, as_seq, channel_list,
                                   metric_rows, segment_updates, speaker_parts)
from core.analysis.metrics_group import Unit, group_metric_rows
from core.analysis.rules import Rules


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
                 reference=None, utts: pd.DataFrame | None = None,
                 category_alerts: list[dict] | None = None
                 ) -> tuple[list[dict], pd.DataFrame, list[dict]]:
    """`analyze` as plain rows (metric dicts, segment updates, alert dicts in `frame` order),
    so a bulk recompute builds one DataFrame per chunk instead of three per session.
    `utts`: the session's utterances with their fused states, for the categories."""
    q = as_seq(seg)
    dur = effective_duration(duration_s, q)
    parts = speaker_parts(q, rules.window)
    rows = metric_rows(session_id, q, channel_list(channels), dur, rules, parts)
    updates = segment_updates(q, rules.window, rules.confidence_threshold, parts)
    alerts = judge(session_id, q, rows, updates.rolling_volatility.to_numpy(), dur, rules,
                   reference, utts, category_alerts)
    return rows, updates, alerts


def judge(session_id: str, q: Seq, rows: list[dict], rolling, duration_s: float, rules: Rules,
          reference: dict[str, list[float]] | None = None,
          utts: pd.DataFrame | None = None,
          category_alerts: list[dict] | None = None) -> list[dict]:
    """Every alert rule over one session's metric rows and segments, and the alerting
    categories over its utterances (`utts`: text, speaker, times, voice, fused), in `frame`
    order.

    The one place alerts are decided: ingest and recompute call it on freshly computed rows,
    the what-if view (core.analysis.rejudge) on stored rows under changed thresholds."""
    alerts = session_alerts(session_id, q, rows, duration_s, rules) + volatility_alerts(
        session_id, q, rows, rolling, reference or {}, rules)
    if category_alerts is not None:  # judged already, with the categories' rows
        alerts += category_alerts
    elif utts is not None and len(utts):
        alerts += categories.judge(session_id, utts, duration_s, rules, q)[1]
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
    """Per-role volatility of the sessions processed so far, in ingest order: one growing
    float array per role (`values` gives them trimmed), so a store's worth of earlier
    sessions is not turned into a new array for every session judged. `ranked` holds the same
    values sorted, for the percentile rules."""

    def __init__(self) -> None:
        self._buf: dict[str, np.ndarray] = {}
        self._n: dict[str, int] = {}
        self.ranked: dict[str, Ranked] = {}

    @property
    def values(self) -> dict[str, np.ndarray]:
        return {sp: b[:self._n[sp]] for sp, b in self._buf.items()}

    def _extend(self, sp: str, vals) -> None:
        vals = np.asarray(vals, dtype=float)
        n, buf = self._n.get(sp, 0), self._buf.get(sp)
        if buf is None or n + vals.size > buf.size:
            grown = np.empty(max(64, 2 * (n + vals.size)))
            if buf is not None:
                grown[:n] = buf[:n]
            self._buf[sp] = buf = grown
        buf[n:n + vals.size] = vals
        self._n[sp] = n + vals.size
        self.ranked.setdefault(sp, Ranked()).add(vals)

    def extend(self, speaker: str, volatilities) -> None:
        """One role's earlier volatilities (none missing), as the store hands them over."""
        self._extend(speaker, volatilities)

    def add(self, metrics) -> None:
        """Metric rows (a DataFrame or a list of dicts) of one or more sessions."""
        if isinstance(metrics, pd.DataFrame):  # column-wise: a store's worth of rows is large
            vol = pd.to_numeric(metrics["volatility"], errors="coerce")
            keep = metrics[(metrics["speaker"] != ALL) & vol.notna()]
            vol = vol[keep.index].astype(float).to_numpy()
            speakers = keep["speaker"].to_numpy(object)
            for sp in dict.fromkeys(speakers.tolist()):  # in order of first appearance
                self._extend(sp, vol[speakers == sp])
            return
        by_role: dict[str, list[float]] = {}  # one extend per role, in order within each
        for sp, vol in ((r["speaker"], r["volatility"]) for r in metrics):
            if sp != ALL and vol is not None and not pd.isna(vol):
                by_role.setdefault(sp, []).append(float(vol))
        for sp, vals in by_role.items():
            self._extend(sp, vals)

    @classmethod
    def from_rows(cls, rows: pd.DataFrame) -> "Reference":
        ref = cls()
        ref.add(rows)
        return ref


# -- a group of sessions at once (the writer, recompute) --------------------------------------
@dataclass
class GroupSegments:
    """The segments of a group of sessions as arrays, session after session (`bounds[i]` to
    `bounds[i + 1]` are session i's rows, in any order within it). Values as the store holds
    them: scores rounded to float32, then widened, as a read would give them; embeddings
    float32, widened only where their distances are taken."""
    segment_id: np.ndarray  # object (str)
    channel: np.ndarray  # int
    speaker: np.ndarray  # object (str)
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray  # object (str)
    confidence: np.ndarray
    scores: np.ndarray  # (n, 9) float64
    emb: np.ndarray | None  # (n, D) float32 as stored (widened where distances are taken);
    #                         None when no segment has one
    has_emb: np.ndarray  # bool per session: every one of its segments has an embedding
    flags: list
    bounds: np.ndarray  # (sessions + 1,)
    label_idx: np.ndarray | None = None  # each label's place in LABELS (analyze_group sets it)
    pitch: np.ndarray | None = None  # how each sounded (core/analysis/prosody): NaN where unmeasured
    loudness: np.ndarray | None = None


@dataclass(frozen=True)
class GroupSession:
    session_id: str
    duration_s: float | None
    rules: Rules  # the set that judges it (Rules.for_session)
    channels: list  # (speaker, flags) per channel, in channel order (metrics.channel_list)
    utterances: tuple = ()  # what was said (core.base.types.Utterance), for the fused states


@dataclass
class GroupAnalysis:
    metrics: list[dict]  # METRIC_COLUMNS rows, session after session
    alerts: list[dict]  # ALERT_COLUMNS rows, session after session, each in `frame` order
    rolling_volatility: np.ndarray  # per segment, in the order given
    fallback_action: np.ndarray  # per segment (object: str or None), in the order given
    fused: pd.DataFrame | None = None  # utterance_id, voice, fused, turn, turn_fused
    categories: list = field(default_factory=list)  # core.analysis.categories.CATEGORY_COLUMNS rows


def analyze_group(sessions: list[GroupSession], seg: GroupSegments,
                  ref: Reference, said: list | None = None) -> GroupAnalysis:
    """`analyze_rows` for many sessions in ingest order, each judged against `ref` as it
    grows, with the rows the one-at-a-time path gives (a test compares them). The per-segment
    work — embedding and score distances, rolling volatility, low confidence — runs once over
    the whole group in numpy; what is left per speaker is a handful of small array sums.
    `said`: per session, its utterances with their fused states (or None), for the
    categories (core/analysis/categories): their rows and alerts."""
    n = len(seg.start)
    sess = np.repeat(np.arange(len(sessions)), np.diff(seg.bounds))
    sid, start, channel = seg.segment_id, seg.start, seg.channel
    # As as_seq: time order (start, channel, id) within a session; speakers apart for parts.
    # (Ids and speakers as their ranks in sorted order: lexsort then compares numbers only.)
    sid_rank = np.unique(sid, return_inverse=True)[1].reshape(-1) if n else np.zeros(0, int)
    sp_rank = np.unique(seg.speaker, return_inverse=True)[1].reshape(-1) if n \
        else np.zeros(0, int)
    time_order = np.lexsort((sid_rank, channel, start, sess))
    part_order = np.lexsort((sid_rank, channel, start, sp_rank, sess))
    part_of = np.zeros(n, dtype=int)  # part number of each row of part_order
    if n:
        new = (sess[part_order][1:] != sess[part_order][:-1]) | \
            (seg.speaker[part_order][1:] != seg.speaker[part_order][:-1])
        part_of[1:] = np.cumsum(new)
    same = part_of[1:] == part_of[:-1] if n else np.zeros(0, bool)  # pair within one part
    first = np.flatnonzero(np.concatenate([[True], ~same])) if n else np.zeros(0, int)
    pos = np.arange(n) - first[part_of]  # position of each row within its part

    with_emb = seg.has_emb[sess[part_order]] if n else np.zeros(0, bool)
    dists = np.full(max(n - 1, 0), np.nan)
    if seg.emb is not None and n > 1:
        dists = _step_distances(seg.emb, part_order)
    steps = 0.5 * np.abs(np.diff(seg.scores[part_order], axis=0)).sum(axis=1) if n > 1 \
        else np.zeros(0)
    labels = seg.label[part_order]
    switched = (labels[1:] != labels[:-1]) & same if n else np.zeros(0, bool)

    window = np.array([s.rules.window for s in sessions], dtype=int)[sess[part_order]] \
        if n else np.zeros(0, int)
    roll = np.full(n, np.nan)  # the mean of the last window - 1 distances ending at each row
    length = np.minimum(pos, window - 1)
    for w in np.unique(length[(length > 0) & with_emb]):
        rows = np.flatnonzero((length == w) & with_emb)
        roll[rows] = dists[rows[:, None] - w + np.arange(w)[None, :]].mean(axis=1)

    threshold = np.array([s.rules.confidence_threshold for s in sessions])[sess] \
        if n else np.zeros(0)
    seg.label_idx = np.array([_LABEL_IDX[x] for x in seg.label.tolist()], dtype=int)
    low = _UNCERTAIN_AT[seg.label_idx] | (seg.confidence < threshold)
    fallback = np.where(low, REQUEST_CLARIFICATION, None).astype(object)

    # Placed back: the rolling volatility of each row in time order, and in the order given.
    roll_given = np.full(n, np.nan)
    roll_given[part_order] = roll
    timed = Seq(segment_id=sid[time_order], channel=channel[time_order],
                speaker=seg.speaker[time_order], start=start[time_order],
                end=seg.end[time_order], label=seg.label[time_order],
                label_idx=seg.label_idx[time_order], confidence=seg.confidence[time_order],
                scores=seg.scores[time_order],
                emb=None,  # the alert checks never read embeddings (a re-judge has none)
                flags=[seg.flags[k] for k in time_order],
                pitch=None if seg.pitch is None else seg.pitch[time_order],
                loudness=None if seg.loudness is None else seg.loudness[time_order])
    roll_time = roll_given[time_order]

    # The rows to be: each session's speakers (sorted; a channel without speech too), then
    # the whole session, each with its segments and its share of the distances above.
    units, durations, two_party, seqs = [], [], [], []
    part_starts = np.concatenate([first, [n]]) if n else np.zeros(1, int)
    empty = np.zeros(0)
    p = 0  # next part
    for i, s in enumerate(sessions):
        lo, hi = int(seg.bounds[i]), int(seg.bounds[i + 1])
        has = bool(seg.has_emb[i])
        q = _slice(timed, lo, hi, has)
        seqs.append(q)
        durations.append(effective_duration(s.duration_s, q))
        mine: dict[str, Unit] = {}
        while p < len(first) and sess[part_order[first[p]]] == i:
            a, b = int(part_starts[p]), int(part_starts[p + 1])
            mine[seg.speaker[part_order[a]]] = Unit(
                i, seg.speaker[part_order[a]], part_order[a:b],
                dists[a:b - 1] if has else empty, steps[a:b - 1], roll[a:b],
                int(switched[a:b - 1].sum()))
            p += 1
        for sp, _ in s.channels:  # a channel with no speech still gets its row
            mine.setdefault(sp, Unit(i, sp, np.zeros(0, int), empty, empty, empty, 0))
        ordered = [mine[sp] for sp in sorted(mine)]
        cat = (lambda key: np.concatenate([getattr(u, key) for u in ordered])
               if ordered else empty)
        units += ordered + [Unit(i, ALL, time_order[lo:hi], cat("dists"), cat("steps"),
                                 cat("roll"), sum(u.switches for u in ordered))]
        two_party.append(len(ordered) >= 2)
    rows = group_metric_rows(units, sessions, durations, seg, low, two_party)

    metrics, alerts, tagged = [], [], []
    k = 0
    for i, s in enumerate(sessions):
        j = k
        while j < len(units) and units[j].session == i:
            j += 1
        lo, hi = int(seg.bounds[i]), int(seg.bounds[i + 1])
        utts = said[i] if said is not None else None
        tags, cat_alerts = categories.judge(s.session_id, utts, durations[i], s.rules, seqs[i])
        tagged += tags
        alerts += judge(s.session_id, seqs[i], rows[k:j], roll_time[lo:hi], durations[i],
                        s.rules, ref.ranked, category_alerts=cat_alerts)
        ref.add(rows[k:j])
        metrics += rows[k:j]
        k = j
    return GroupAnalysis(metrics, alerts, roll_given, fallback, categories=tagged)


def _step_distances(emb: np.ndarray, order: np.ndarray, block: int = 1024) -> np.ndarray:
    """The Euclidean distance between each row of `emb[order]` and the next, widened to
    float64 block by block: the arithmetic of one whole-array pass (each row's sum is its
    own), without a float64 copy of every embedding of the group."""
    out = np.empty(len(order) - 1)
    for lo in range(0, len(order) - 1, block):
        hi = min(lo + block, len(order) - 1)
        rows = emb[order[lo:hi + 1]].astype(np.float64)
        out[lo:hi] = np.linalg.norm(np.diff(rows, axis=0), axis=1)
    return out


def _slice(q: Seq, lo: int, hi: int, has_emb: bool) -> Seq:
    return Seq(q.segment_id[lo:hi], q.channel[lo:hi], q.speaker[lo:hi], q.start[lo:hi],
               q.end[lo:hi], q.label[lo:hi], q.label_idx[lo:hi], q.confidence[lo:hi],
               q.scores[lo:hi], q.emb[lo:hi] if has_emb and q.emb is not None else None,
               q.flags[lo:hi], q.pitch[lo:hi], q.loudness[lo:hi])
