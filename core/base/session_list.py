"""The session list's filters — the overview's and the API's `GET /v1/sessions` — as one pure
function over `Reader.summary` rows, so both filter alike."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd


BANDS = ("narrowband", "wideband")


def band_of(summary: pd.DataFrame) -> pd.Series:
    """"narrowband" or "wideband" per session row, from its channels' quality flags."""
    return summary["quality_flags"].map(
        lambda v: "narrowband" if "narrowband" in list(v) else "wideband")


@dataclass
class ListFilter:
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive day
    agents: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)  # a customer's or a person's id, or an agent's
    roles: list[str] = field(default_factory=list)  # sessions with any of these speakers
    dominant: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # any of these quality or alert flags
    categories: list[str] = field(default_factory=list)  # any of these (core/analysis/categories)
    text: str = ""  # in the session id, file name, agent, customer, team or tags
    band: str = ""  # "narrowband" (telephone-band audio, core/analysis/quality), "wideband", or either


def apply(summary: pd.DataFrame, f: ListFilter) -> pd.DataFrame:
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
    for col, wanted in (("speakers", f.roles), ("flags", f.flags),
                        ("categories", f.categories)):
        if wanted:
            w = set(wanted)
            keep &= summary[col].map(lambda v: bool(w & set(v)))
    if f.band:
        if f.band not in BANDS:
            raise ValueError(f"band is one of {', '.join(BANDS)}, not {f.band!r}")
        keep &= band_of(summary) == f.band
    text = f.text.strip().lower()
    if text:
        hay = (summary.session_id.fillna("") + " " + summary.file_name.fillna("") + " "
               + summary.agent_id.fillna("") + " " + summary.customer_id.fillna("") + " "
               + summary.team.fillna("") + " " + summary.tags.map(" ".join)).str.lower()
        keep &= hay.str.contains(text, regex=False)
    return summary[keep]
