"""Roll-ups over stored session metrics: per agent, team or customer by day or week, and each
person's baseline (usual emotion mix and volatility) with how far their latest session departs.

Inputs are `Reader.session_metrics()` rows (session_metrics joined with session metadata) and
`Reader.alerts()` rows, so these functions never touch the database.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.labels import LABELS
from core.metrics import ALL, tv_distance

GROUPS = {"agent": "agent_id", "team": "team", "customer": "customer_id"}
PERIODS = ("day", "week")
AGG_COLUMNS = ["key", "period_start", "sessions", "talk_s", "negative_share",
               "mean_volatility", "alerts", "high_alerts"]


def when(df: pd.DataFrame) -> pd.Series:
    """A session's date: recorded_at from the manifest, else when it was ingested."""
    rec = pd.to_datetime(df["recorded_at"]) if "recorded_at" in df else None
    ing = pd.to_datetime(df["ingested_at"]) if "ingested_at" in df else None
    if rec is None:
        return ing
    return rec.fillna(ing) if ing is not None else rec


def period_start(ts: pd.Series, period: str) -> pd.Series:
    """Midnight of the day, or the Monday that starts the ISO week."""
    day = pd.to_datetime(ts).dt.normalize()
    if period == "day":
        return day
    if period == "week":
        return day - pd.to_timedelta(day.dt.weekday, unit="D")
    raise ValueError(f"period must be day or week, not {period!r}")


def _weighted_negative(g: pd.DataFrame) -> float | None:
    ok = g.neg_share.notna() & (g.talk_s > 0)
    w = g.talk_s[ok].sum()
    return float((g.neg_share[ok] * g.talk_s[ok]).sum() / w) if w > 0 else None


def aggregate(metrics: pd.DataFrame, alerts: pd.DataFrame, by: str = "agent",
              period: str = "week", speaker: str = ALL) -> pd.DataFrame:
    """One row per (agent|team|customer, day|week).

    sessions: count; talk_s: total talk time of `speaker` (the whole session for "all");
    negative_share: talk-time-weighted share of negative time; mean_volatility: mean of the
    sessions' volatility; alerts / high_alerts: alerts raised for `speaker` (all speakers for
    "all") in those sessions. Sessions without the grouping id are left out.
    """
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}, not {by!r}")
    rows = metrics[(metrics.speaker == speaker) & metrics[GROUPS[by]].notna()].copy()
    if rows.empty:
        return pd.DataFrame(columns=AGG_COLUMNS)
    rows["key"] = rows[GROUPS[by]]
    rows["period_start"] = period_start(when(rows), period)
    al = alerts if speaker == ALL else alerts[alerts.speaker == speaker]
    n_alerts = al.groupby("session_id").size()
    n_high = al[al.severity == "high"].groupby("session_id").size()
    rows["alerts"] = rows.session_id.map(n_alerts).fillna(0).astype(int)
    rows["high_alerts"] = rows.session_id.map(n_high).fillna(0).astype(int)
    out = []
    for (key, start), g in rows.groupby(["key", "period_start"], sort=True):
        vol = g.volatility.dropna()
        out.append({"key": key, "period_start": start, "sessions": int(g.session_id.nunique()),
                    "talk_s": float(g.talk_s.sum()), "negative_share": _weighted_negative(g),
                    "mean_volatility": float(vol.mean()) if len(vol) else None,
                    "alerts": int(g.alerts.sum()), "high_alerts": int(g.high_alerts.sum())})
    return pd.DataFrame(out, columns=AGG_COLUMNS)


def person_sessions(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (person, session): an agent channel belongs to agent_id, every other voice
    (customer, the one speaker of a diary) to customer_id."""
    rows = metrics[metrics.speaker != ALL].copy()
    if rows.empty:
        return pd.DataFrame(columns=["person", "role", "session_id", "when", "mix", "neg_share",
                                     "volatility", "talk_s"])
    rows["person"] = np.where(rows.speaker == "agent", rows.agent_id, rows.customer_id)
    rows = rows[rows.person.notna() & (rows.n_segments > 0)]
    rows["when"] = when(rows)
    rows = rows.rename(columns={"speaker": "role"})
    return rows[["person", "role", "session_id", "when", "mix", "neg_share", "volatility",
                 "talk_s"]].sort_values(["person", "when", "session_id"]).reset_index(drop=True)


def baseline(history: pd.DataFrame, rules) -> dict:
    """One person's baseline from all sessions but the latest, and the latest's departure.

    mix_distance: total-variation distance between the latest mix and the mean earlier mix;
    volatility_z: (latest − mean earlier volatility) / their sample standard deviation.
    """
    h = history.sort_values(["when", "session_id"])
    latest, before = h.iloc[-1], h.iloc[:-1]
    out = {"person": latest.person, "roles": ",".join(sorted(set(h.role))),
           "sessions": len(h), "baseline_sessions": len(before),
           "latest_session_id": latest.session_id, "latest_when": latest.when,
           "latest_mix": list(latest.mix), "latest_neg_share": latest.neg_share,
           "latest_volatility": latest.volatility, "baseline_mix": None,
           "baseline_neg_share": None, "baseline_volatility": None,
           "baseline_volatility_sd": None, "mix_distance": None, "neg_share_delta": None,
           "volatility_z": None, "departs": False,
           "status": "no baseline yet"}
    if len(before) < rules.baseline_min_sessions:
        return out
    base_mix = np.mean(np.stack([np.asarray(m, float) for m in before.mix]), axis=0)
    vols = before.volatility.dropna().astype(float)
    out.update(baseline_mix=base_mix.tolist(),
               baseline_neg_share=float(before.neg_share.dropna().mean())
               if before.neg_share.notna().any() else None,
               mix_distance=tv_distance(latest.mix, base_mix))
    if out["baseline_neg_share"] is not None and pd.notna(latest.neg_share):
        out["neg_share_delta"] = float(latest.neg_share) - out["baseline_neg_share"]
    if len(vols):
        out["baseline_volatility"] = float(vols.mean())
    if len(vols) >= 2:
        sd = float(vols.std(ddof=1))
        out["baseline_volatility_sd"] = sd
        if sd > 0 and pd.notna(latest.volatility):
            out["volatility_z"] = (float(latest.volatility) - out["baseline_volatility"]) / sd
    far = out["mix_distance"] >= rules.baseline_mix_distance - 1e-9
    jumpy = out["volatility_z"] is not None and \
        abs(out["volatility_z"]) >= rules.baseline_volatility_z - 1e-9
    out["departs"] = bool(far or jumpy)
    out["status"] = "departs from baseline" if out["departs"] else "within baseline"
    return out


def person_baselines(metrics: pd.DataFrame, rules) -> pd.DataFrame:
    """`baseline` for every person with at least one session, latest departures first."""
    ps = person_sessions(metrics)
    rows = [baseline(g, rules) for _, g in ps.groupby("person", sort=True)]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["departs", "mix_distance", "person"], ascending=[False, False, True],
                          na_position="last", kind="stable").reset_index(drop=True)


def label_mix_frame(mix_values) -> pd.DataFrame:
    """Lists of 9 shares → one column per label, for charts."""
    return pd.DataFrame([list(m) for m in mix_values], columns=LABELS)


def mix_table(label_seconds: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Reader.label_seconds rows with each session's row number in `summary` (Reader.summary)
    and its day and week: what mix_over_time groups."""
    mix = label_seconds.copy()
    row = pd.Series(np.arange(len(summary)), index=summary.session_id)
    ids = mix.session_id.astype(object)
    mix["row"] = ids.map(row).to_numpy()
    day = pd.to_datetime(ids.map(summary.set_index("session_id")["when"])).dt.normalize()
    mix["day"] = day
    mix["week"] = period_start(day, "week")
    return mix


def mix_over_time(mix: pd.DataFrame, rows: pd.DataFrame, n_all: int,
                  period: str) -> pd.DataFrame:
    """Share of speech per label per day/week for the summary rows `rows` (mix: mix_table)."""
    m = mix if len(rows) == n_all else mix[mix.row.isin(rows.index.to_numpy())]
    if m.empty:
        return pd.DataFrame(columns=["period", "label", "seconds", "share"])
    g = m.groupby([period, "label"], as_index=False).seconds.sum().rename(
        columns={period: "period"})
    g["share"] = g.seconds / g.groupby("period").seconds.transform("sum")
    g["label"] = pd.Categorical(g.label, categories=LABELS, ordered=True)
    return g.sort_values(["period", "label"])
