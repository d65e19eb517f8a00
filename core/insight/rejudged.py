"""Stored sessions judged again under other rules, read through one Reader: the alerts the
rules would raise now (core.analysis.rejudge, the code that stored them) and the sessions whose
stored analytics came from other rules."""
from __future__ import annotations

import pandas as pd

from core.analysis import rejudge
from core.storage.queries import EVERY, Reader, SessionFilter


def judged_alerts(reader: Reader, rules, f: SessionFilter = EVERY) -> pd.DataFrame:
    """Alerts of the sessions `f` covers, judged now under `rules`; with the stored rules,
    exactly the stored alerts. The reference is every earlier session the reader covers."""
    window = reader.sessions(f).session_id
    within = SessionFilter(session_ids=tuple(window))
    return rejudge.judge_stored(reader.session_metrics(), reader.judge_segments(within),
                                reader.channel_flags(within), rules, set(window),
                                reader.utterances(within))


def stale_sessions(reader: Reader, rules, f: SessionFilter = EVERY) -> set[str]:
    """Sessions whose stored analytics came from other rules than `rules` now gives them
    (`emoscope recompute` brings them up to date)."""
    return rejudge.stale(reader.session_metrics(f), rules)
