"""The session filters of the overview (and the reports page): widgets and the pure filter."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from dashboard.components import ui


@dataclass
class SessionFilter:
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive day
    agents: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    dominant: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    text: str = ""


def apply(summary: pd.DataFrame, f: SessionFilter) -> pd.DataFrame:
    """Rows of the session summary that pass every filter that is set."""
    keep = pd.Series(True, index=summary.index)
    day = summary["when"].dt.date
    if f.since:
        keep &= day >= f.since
    if f.until:
        keep &= day <= f.until
    for col, allowed in (("agent_id", f.agents), ("team", f.teams), ("dominant", f.dominant)):
        if allowed:
            keep &= summary[col].isin(allowed)
    if f.people:
        keep &= summary.customer_id.isin(f.people) | summary.agent_id.isin(f.people)
    for col, wanted in (("speakers", f.roles), ("flags", f.flags)):
        if wanted:
            w = set(wanted)
            keep &= summary[col].map(lambda v: bool(w & set(v)))
    text = f.text.strip().lower()
    if text:
        hay = (summary.session_id.fillna("") + " " + summary.file_name.fillna("") + " "
               + summary.agent_id.fillna("") + " " + summary.customer_id.fillna("") + " "
               + summary.team.fillna("") + " " + summary.tags.map(" ".join)).str.lower()
        keep &= hay.str.contains(text, regex=False)
    return summary[keep]


def widgets(summary: pd.DataFrame, options: dict, key: str = "f") -> SessionFilter:
    """Filter widgets laid out in two rows; their keys persist across reruns.

    `options` is data.summary_options: the choices, computed once per DB version."""
    f = SessionFilter()
    lo, hi = options["dates"] or (dt.date.today(), dt.date.today())
    c = st.columns([2, 1, 1, 1])
    # Keyed by the span of the data: when new sessions extend it, the range resets to all of it
    # instead of silently hiding them.
    rng = c[0].date_input("Dates", value=(lo, hi), min_value=lo, max_value=hi,
                          key=f"{key}_dates_{lo}_{hi}")
    if isinstance(rng, (tuple, list)) and len(rng) == 2:
        f.since, f.until = rng
        if (f.since, f.until) == (lo, hi):
            f.since = f.until = None  # the whole span: no need to compare 10,000 dates
    f.agents = c[1].multiselect("Agent", options["agents"], key=f"{key}_agent")
    f.teams = c[2].multiselect("Team", options["teams"], key=f"{key}_team")
    f.people = c[3].multiselect("Customer / person", options["people"], key=f"{key}_person")
    c = st.columns([1, 1, 1, 2])
    f.roles = c[0].multiselect("Speaker role", options["roles"], key=f"{key}_role")
    f.dominant = c[1].multiselect("Dominant emotion", options["dominant"], format_func=ui.label,
                                  key=f"{key}_dominant")
    f.flags = c[2].multiselect("Flags", options["flags"], key=f"{key}_flags")
    f.text = c[3].text_input("Search ids and tags", key=f"{key}_text",
                             placeholder="session id, file, agent, customer, tag…")
    return f
