"""Roll-ups over stored session metrics: per agent, team or customer by day or week, and each
person's baseline (usual emotion mix and volatility) with how far their latest session departs.

Inputs are `Reader.session_metrics()` rows (session_metrics joined with session metadata) and
`Reader.alerts()` rows, so these functions never touch the database.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.base.labels import LABELS, NEGATIVE
from core.analysis.metrics import ALL, tv_distance
from core.analysis.rules import SEVERITY_RANK


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
    cols = ["person", "role", "session_id", "when", "mix", "neg_share", "volatility", "talk_s"]
    rows = metrics[metrics.speaker != ALL].copy()
    if rows.empty:
        return pd.DataFrame(columns=cols + ["file_name"])
    rows["person"] = np.where(rows.speaker == "agent", rows.agent_id, rows.customer_id)
    rows = rows[rows.person.notna() & (rows.n_segments > 0)]
    rows["when"] = when(rows)
    rows = rows.rename(columns={"speaker": "role"})
    cols += [c for c in ("file_name",) if c in rows]
    return rows[cols].sort_values(["person", "when", "session_id"]).reset_index(drop=True)


def _against(entry, before: pd.DataFrame, rules) -> dict:
    """How one entry compares with `before` (the person's earlier entries).

    mix_distance: total-variation distance between its mix and the mean earlier mix;
    volatility_z / neg_share_z: (value − mean earlier value) / their sample standard deviation
    (NULL under two earlier values or with sd 0). The band is mean ± volatility_z × sd (the
    `[baseline] volatility_z` setting, 2 by default). It departs when the mix distance reaches
    `mix_distance` or either z reaches `volatility_z` in size; no baseline under `min_sessions`.
    """
    out = {"baseline_sessions": len(before), "baseline_mix": None, "baseline_neg_share": None,
           "baseline_neg_share_sd": None, "baseline_volatility": None,
           "baseline_volatility_sd": None, "mix_distance": None, "neg_share_delta": None,
           "neg_share_z": None, "volatility_z": None, "departs": False,
           "status": "no baseline yet"}
    if len(before) < rules.baseline_min_sessions:
        return out
    base_mix = np.mean(np.stack([np.asarray(m, float) for m in before.mix]), axis=0)
    out.update(baseline_mix=base_mix.tolist(), mix_distance=tv_distance(entry.mix, base_mix))
    z_limit = rules.baseline_volatility_z
    for col, name in (("neg_share", "neg_share"), ("volatility", "volatility")):
        vals = before[col].dropna().astype(float)
        if len(vals):
            out[f"baseline_{name}"] = float(vals.mean())
        if len(vals) >= 2:
            sd = float(vals.std(ddof=1))
            out[f"baseline_{name}_sd"] = sd
            if sd > 0 and pd.notna(entry[col]):
                out[f"{name}_z"] = (float(entry[col]) - float(vals.mean())) / sd
    if out["baseline_neg_share"] is not None and pd.notna(entry.neg_share):
        out["neg_share_delta"] = float(entry.neg_share) - out["baseline_neg_share"]
    far = out["mix_distance"] >= rules.baseline_mix_distance - 1e-9
    jumpy = any(out[z] is not None and abs(out[z]) >= z_limit - 1e-9
                for z in ("volatility_z", "neg_share_z"))
    out["departs"] = bool(far or jumpy)
    out["status"] = "departs from baseline" if out["departs"] else "within baseline"
    return out


def baseline(history: pd.DataFrame, rules) -> dict:
    """One person's baseline from all sessions but the latest, and the latest's departure."""
    h = history.sort_values(["when", "session_id"])
    latest = h.iloc[-1]
    return {"person": latest.person, "roles": ",".join(sorted(set(h.role))),
            "sessions": len(h), "latest_session_id": latest.session_id,
            "latest_when": latest.when, "latest_mix": list(latest.mix),
            "latest_neg_share": latest.neg_share, "latest_volatility": latest.volatility,
            **_against(latest, h.iloc[:-1], rules)}


JOURNEY_BANDS = ("neg_share", "volatility")


def journey(history: pd.DataFrame, rules) -> pd.DataFrame:
    """Every entry of one person (person_sessions rows), oldest first, each judged against the
    entries before it as `baseline` judges the latest: the baseline columns of `_against`, and
    `<figure>_lo` / `<figure>_hi`, the band mean ± volatility_z × sd, for negative share and
    volatility."""
    h = history.sort_values(["when", "session_id"]).reset_index(drop=True)
    rows = [{**h.iloc[i].to_dict(), **_against(h.iloc[i], h.iloc[:i], rules)}
            for i in range(len(h))]
    out = pd.DataFrame(rows)
    z = rules.baseline_volatility_z
    for name in JOURNEY_BANDS:
        if out.empty:
            out[f"{name}_lo"] = out[f"{name}_hi"] = []
            continue
        mean = pd.to_numeric(out[f"baseline_{name}"], errors="coerce")
        sd = pd.to_numeric(out[f"baseline_{name}_sd"], errors="coerce")
        out[f"{name}_lo"], out[f"{name}_hi"] = mean - z * sd, mean + z * sd
    return out


# Fused states (core/analysis/fusion) that speak of distress: the words, the voice, or both negative.
DISTRESS = ("negative", "suppressed_distress", "masked_frustration")
WORDS_AND_VOICE = ["session_id", "when", "file_name", "said", "voice", "words", "fused",
                   "distress", "baseline_distress", "distress_lo", "distress_hi",
                   "distress_departs", "states"]


def words_and_voice(j: pd.DataFrame, utts: pd.DataFrame, rules) -> pd.DataFrame:
    """A person's entries (a `journey`, oldest first) with what was said beside how it
    sounded: `said` (the entry's words), `voice` (its dominant emotion), `words` (its
    sentiment, averaged by utterance duration), `fused` (its most frequent fused state),
    `states` (seconds per fused state), and `distress`, the share of its spoken seconds in a
    DISTRESS state, against the person's own baseline as the journey's figures are: the mean
    of the earlier entries with words (from `[baseline] min_sessions` of them), the band
    mean ± volatility_z × sd, `distress_departs` when above it. Entries without words keep
    NULLs and do not count in later baselines."""
    if j.empty:
        return pd.DataFrame(columns=WORDS_AND_VOICE)
    u = utts[utts.session_id.isin(j.session_id)] if len(utts) else utts
    rows = []
    for e in j.itertuples(index=False):
        mine = u[u.session_id == e.session_id] if len(u) else u
        mix = np.asarray(e.mix, float) if e.mix is not None else np.zeros(len(LABELS))
        row = {"session_id": e.session_id, "when": e.when,
               "file_name": getattr(e, "file_name", None), "said": None,
               "voice": LABELS[int(np.argmax(mix))] if mix.sum() > 0 else None,
               "words": np.nan, "fused": None, "distress": np.nan, "states": {}}
        if len(mine):
            secs = (mine.end_s - mine.start_s).clip(lower=1e-3)
            row["said"] = " … ".join(mine.text.astype(str))
            sent = pd.to_numeric(mine.sentiment, errors="coerce")
            if sent.notna().any():
                row["words"] = float(np.average(sent[sent.notna()], weights=secs[sent.notna()]))
            states = secs.groupby(mine.fused.fillna("unclear")).sum()
            row["states"] = {k: round(float(v), 2) for k, v in states.items()}
            row["fused"] = str(states.idxmax())
            row["distress"] = float(states[states.index.isin(DISTRESS)].sum() / secs.sum())
        rows.append(row)
    out = pd.DataFrame(rows)
    z = rules.baseline_volatility_z
    base, lo, hi, departs = [], [], [], []
    for i in range(len(out)):
        earlier = out.distress.iloc[:i].dropna()
        if len(earlier) < rules.baseline_min_sessions:
            base.append(np.nan), lo.append(np.nan), hi.append(np.nan), departs.append(False)
            continue
        mean, sd = float(earlier.mean()), float(earlier.std(ddof=1)) if len(earlier) > 1 else 0.0
        base.append(mean), lo.append(mean - z * sd), hi.append(mean + z * sd)
        now = out.distress.iloc[i]
        departs.append(bool(pd.notna(now) and now > mean + z * sd + 1e-9))
    out["baseline_distress"], out["distress_lo"], out["distress_hi"] = base, lo, hi
    out["distress_departs"] = departs
    return out[WORDS_AND_VOICE]


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


def for_roles(mix: pd.DataFrame, roles) -> pd.DataFrame:
    """label_seconds / mix_table rows of these speaker roles only (all when none given)."""
    return mix[mix.speaker.isin(list(roles))] if roles else mix


def alerts_of_roles(alerts: pd.DataFrame, roles) -> pd.DataFrame:
    """The alerts a speaker-role filter keeps: those raised on the speech of these roles (an
    alert on the whole conversation, speaker `all`, belongs to no one role). Every page,
    export and API route filters alerts by role through this."""
    if not roles or alerts is None or not len(alerts):
        return alerts
    return alerts[alerts.speaker.isin(list(roles))]


def restrict_to_roles(summary: pd.DataFrame, label_seconds: pd.DataFrame,
                      roles, alerts: pd.DataFrame) -> pd.DataFrame:
    """Summary rows (Reader.summary) whose talk time, negative share, dominant label, alerts,
    worst severity and alert flags count only the speech of these roles: with a role chosen,
    every figure follows it, as on the Alerts page and in reports (`alerts`: Reader.alerts
    of the same sessions). Unchanged when no role is given."""
    if not roles:
        return summary
    mix = for_roles(label_seconds, roles).groupby(["session_id", "label"], as_index=False) \
        .seconds.sum()
    talk = mix.groupby("session_id").seconds.sum()
    neg = mix[mix.label.isin(NEGATIVE)].groupby("session_id").seconds.sum()
    dom = (mix.sort_values(["session_id", "seconds"], ascending=[True, False], kind="stable")
           .drop_duplicates("session_id").set_index("session_id").label)
    out = summary.copy()
    out["talk_s"] = out.session_id.map(talk).fillna(0.0)
    out["negative_share"] = (out.session_id.map(neg).fillna(0.0)
                             / out.talk_s.where(out.talk_s > 0)).astype(float)
    out["dominant"] = out.session_id.map(dom)
    kept = alerts_of_roles(alerts, roles)
    rank = kept.severity.map(SEVERITY_RANK).groupby(kept.session_id).max()
    rules = kept.groupby("session_id").rule.agg(lambda r: set(r))
    out["alerts"] = out.session_id.map(kept.groupby("session_id").size()).fillna(0).astype(int)
    out["severity_rank"] = out.session_id.map(rank).fillna(0).astype(int)
    out["severity"] = out.severity_rank.map({v: k for k, v in SEVERITY_RANK.items()}).fillna("")
    quality = out.quality_flags if "quality_flags" in out else [[]] * len(out)
    out["flags"] = [sorted(set(q) | rules.get(sid, set()))
                    for sid, q in zip(out.session_id, quality)]
    return out.sort_values(["severity_rank", "alerts", "negative_share", "when"],
                           ascending=[False, False, False, False],
                           na_position="last").reset_index(drop=True)


def negative_share_of(mix: pd.DataFrame) -> float | None:
    """Negative seconds over all seconds of label_seconds rows; None without speech."""
    total = float(mix.seconds.sum()) if len(mix) else 0.0
    return float(mix.seconds[mix.label.isin(NEGATIVE)].sum()) / total if total > 0 else None


def mix_over_time(mix: pd.DataFrame, rows: pd.DataFrame, n_all: int,
                  period: str, roles=()) -> pd.DataFrame:
    """Share of speech per label per day/week for the summary rows `rows` (mix: mix_table),
    counting only the speech of `roles` when given."""
    m = mix if len(rows) == n_all else mix[mix.row.isin(rows.index.to_numpy())]
    m = for_roles(m, roles)
    if m.empty:
        return pd.DataFrame(columns=["period", "label", "seconds", "share"])
    g = m.groupby([period, "label"], as_index=False).seconds.sum().rename(
        columns={period: "period"})
    g["share"] = g.seconds / g.groupby("period").seconds.transform("sum")
    g["label"] = pd.Categorical(g.label, categories=LABELS, ordered=True)
    return g.sort_values(["period", "label"])
