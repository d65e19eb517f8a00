"""One person at a time, read through one Reader: the (person, session) rows behind the
baselines, each person's baseline, their journey over sessions, and their words beside their
voice (core.analysis.aggregates does the arithmetic)."""
from __future__ import annotations

import pandas as pd

from core.analysis import aggregates as agg
from core.storage.queries import EVERY, Reader, SessionFilter


def person_sessions(reader: Reader, f: SessionFilter = EVERY) -> pd.DataFrame:
    """(person, session) rows behind the baselines: mix, negative share, volatility."""
    return agg.person_sessions(reader.session_metrics(f))


def baselines(reader: Reader, rules, f: SessionFilter = EVERY) -> pd.DataFrame:
    """Each person's baseline and how far their latest session departs from it."""
    return agg.person_baselines(reader.session_metrics(f), rules)


def journey(reader: Reader, person: str, rules, f: SessionFilter = EVERY,
            role: str | None = None) -> pd.DataFrame:
    """One person's sessions (one role's, when given), each against the earlier ones."""
    ps = person_sessions(reader, f)
    ps = ps[(ps.person == person) & ((ps.role == role) if role else True)]
    return agg.journey(ps, rules)


def words_and_voice(reader: Reader, person: str, rules, f: SessionFilter = EVERY,
                    role: str | None = None) -> pd.DataFrame:
    """One person's entries (`journey`) with each one's words beside its voice and its fused
    states against the person's own baseline (core.analysis.aggregates.words_and_voice)."""
    j = journey(reader, person, rules, f, role)
    said = reader.utterances(SessionFilter(session_ids=tuple(j.session_id))) if len(j) \
        else pd.DataFrame()
    if len(said) and role:
        said = said[said.speaker == role]
    return agg.words_and_voice(j, said, rules)
