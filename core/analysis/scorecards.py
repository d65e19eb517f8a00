"""One row per session for lists and CSVs, and one row per agent for supervisors.

Inputs are `Reader.session_metrics()` and `Reader.alerts()` rows (or the re-judged alerts of
core.analysis.rejudge, which have the same columns), so nothing here touches the database.
docs/metrics.md defines every column.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.analysis.aggregates import when
from core.analysis.metrics import ALL
from core.analysis.rules import SEVERITIES, SEVERITY_RANK

ROLE_COLUMNS = {"agent": ["talk_s", "neg_share", "interruptions", "volatility"],
                "customer": ["talk_s", "neg_share", "neg_first", "neg_last", "interruptions",
                             "volatility"],
                "speaker": ["talk_s", "neg_share", "volatility"]}
SESSION_COLUMNS = (
    ["session_id", "file_name", "when", "agent_id", "customer_id", "team", "rule_set",
     "duration_s", "talk_s", "neg_share", "volatility", "turns", "interruptions", "overlap_s",
     "silence_s", "longest_silence_s", "talk_share"]
    + [f"{role}_{c}" for role, cols in ROLE_COLUMNS.items() for c in cols]
    + ["alerts", "urgent", "high", "medium", "low", "severity", "first_alert_t_s",
       "categories"])
# Scorecard figures compared with the team's median (higher is worse for all but talk share).
SCORE_FIGURES = ["talk_share", "cust_neg_first", "cust_neg_last", "cust_neg_change",
                 "interruptions_per_call", "overlap_per_call", "mean_volatility"]
SCORE_COLUMNS = (["agent_id", "team", "calls", *SCORE_FIGURES, "urgent", "high", "medium",
                  "low"]
                 + [f"{c}_vs_team" for c in SCORE_FIGURES])


def session_rows(metrics: pd.DataFrame, alerts: pd.DataFrame,
                 categories: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per session: the whole-session figures, each role's own, its alerts and the
    categories it meets (`Reader.categories` rows; a sorted list per session).

    talk_share: the agent's talk time over the agent's and the customer's (NULL without both).
    first_alert_t_s: the earliest alert's moment, where a click opens the session.
    """
    if metrics.empty:
        return pd.DataFrame(columns=SESSION_COLUMNS)
    every = metrics[metrics.speaker == ALL].drop_duplicates("session_id").set_index("session_id")
    out = every[["file_name", "agent_id", "customer_id", "team", "duration_s", "talk_s",
                 "neg_share", "volatility", "turns", "interruptions", "overlap_s", "silence_s",
                 "longest_silence_s"]].copy()
    out["rule_set"] = every["rule_set"] if "rule_set" in every else None
    out["when"] = when(every)
    for role, cols in ROLE_COLUMNS.items():
        part = metrics[metrics.speaker == role].drop_duplicates("session_id") \
            .set_index("session_id")
        for c in cols:
            out[f"{role}_{c}"] = part[c].reindex(out.index).astype(float)
    both = out.agent_talk_s + out.customer_talk_s
    out["talk_share"] = out.agent_talk_s / both.where(both > 0)
    al = alerts[alerts.session_id.isin(out.index)] if len(alerts) else alerts
    worst_first_ = SEVERITIES[::-1]  # urgent, high, medium, low
    for sev in worst_first_:
        n = al[al.severity == sev].groupby("session_id").size() if len(al) \
            else pd.Series(dtype=int)
        out[sev] = n.reindex(out.index).fillna(0).astype(int)
    out["alerts"] = sum(out[sev] for sev in worst_first_)
    out["severity"] = np.select([out[sev] > 0 for sev in worst_first_], list(worst_first_), "")
    first = al.groupby("session_id").t_s.min() if len(al) else pd.Series(dtype=float)
    out["first_alert_t_s"] = first.reindex(out.index).astype(float)
    tags = categories.groupby("session_id").category.agg(lambda c: sorted(set(c))) \
        if categories is not None and len(categories) else pd.Series(dtype=object)
    out["categories"] = [tags.get(sid, []) for sid in out.index]
    return out.reset_index()[SESSION_COLUMNS]


def worst_first(rows: pd.DataFrame) -> pd.DataFrame:
    """Sessions by worst alert, then number of alerts, then the customer's last-quarter
    negative share, newest first among equals."""
    rank = rows.severity.map(SEVERITY_RANK).fillna(0)
    return (rows.assign(_r=rank).sort_values(
        ["_r", "alerts", "customer_neg_last", "when"], ascending=False, na_position="last",
        kind="stable").drop(columns="_r").reset_index(drop=True))


def _team(values: pd.Series):
    v = values.dropna()
    return v.mode().iloc[0] if len(v) else None


def agent_scorecards(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per agent over `session_rows` (their calls in the window), with each figure's
    difference from the median of the agents of the same team (`<figure>_vs_team`)."""
    # A call has an agent's voice on it: a mono recording that names an agent (a note, a
    # diary-style upload) is not one of their calls.
    calls = rows[rows.agent_id.notna() & rows.agent_talk_s.notna()]
    if calls.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    out = []
    for agent, g in calls.groupby("agent_id", sort=True):
        a, c = g.agent_talk_s.fillna(0).sum(), g.customer_talk_s.fillna(0).sum()
        first, last = g.customer_neg_first.mean(), g.customer_neg_last.mean()
        out.append({
            "agent_id": agent, "team": _team(g.team), "calls": len(g),
            "talk_share": a / (a + c) if a + c > 0 else np.nan,
            "cust_neg_first": first, "cust_neg_last": last, "cust_neg_change": last - first,
            "interruptions_per_call": g.agent_interruptions.mean(),
            "overlap_per_call": g.overlap_s.mean(), "mean_volatility": g.volatility.mean(),
            **{sev: int(g[sev].sum()) for sev in SEVERITIES}})
    card = pd.DataFrame(out)
    for c in SCORE_FIGURES:
        card[c] = card[c].astype(float)
        median = card.groupby(card.team.fillna(""))[c].transform("median")
        card[f"{c}_vs_team"] = card[c] - median
    return card[SCORE_COLUMNS]


def team_medians(card: pd.DataFrame) -> pd.DataFrame:
    """The median of each scorecard figure per team: the line each agent is held against."""
    if card.empty:
        return pd.DataFrame(columns=["team", *SCORE_FIGURES])
    return card.groupby(card.team.fillna(""))[SCORE_FIGURES].median().reset_index()
