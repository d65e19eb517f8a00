"""Figures over many sessions, read through one Reader: aggregates by agent or team per
period, the session table (one row per session) and agent scorecards beside their team."""
from __future__ import annotations

import pandas as pd

from core.analysis import aggregates as agg
from core.analysis import scorecards
from core.analysis.metrics import ALL
from core.storage.queries import EVERY, Reader, SessionFilter


def aggregates(reader: Reader, by: str = "agent", period: str = "week", speaker: str = ALL,
               f: SessionFilter = EVERY) -> pd.DataFrame:
    """Sessions, talk time, emotion mix and alerts per `by` and `period`
    (core.analysis.aggregates.aggregate)."""
    return agg.aggregate(reader.session_metrics(f), reader.alerts(f), by, period, speaker)


def session_table(reader: Reader, f: SessionFilter = EVERY,
                  alerts: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per session with its conversation, per-role and alert figures and its
    categories (core.analysis.scorecards.session_rows); `alerts` replaces the stored ones
    (what-if)."""
    return scorecards.session_rows(reader.session_metrics(f),
                                   reader.alerts(f) if alerts is None else alerts,
                                   reader.categories(f))


def agent_scorecards(reader: Reader, f: SessionFilter = EVERY) -> pd.DataFrame:
    """One row per agent in `f`, each figure beside its team's median."""
    return scorecards.agent_scorecards(session_table(reader, f))
