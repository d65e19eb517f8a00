"""Reads: every one of them goes through Reader._sessions_where, the single place that decides
which sessions a reader covers."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from core.guard.access import operator
from core.insight import people, rollups
from core.storage.queries import Reader, SessionFilter
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import Curve
from tests.store_fixtures import RULES
from tests.test_analytics_store import CALLS

HIDDEN = CALLS[3]  # angry, volatile: has alerts, metrics, segments and frames of its own


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("q") / "q.duckdb")
    s.migrate()
    writer = SessionWriter(s, RULES)
    curve = Curve(1, "customer", np.arange(20) * 0.1, np.full((20, 9), 1 / 9, np.float32))
    for r in CALLS:
        writer.save(dataclasses.replace(r, curves=(curve,)), None)
    return s


class HidingReader(Reader):
    """A reader for whom one session does not exist: the condition added in one place only."""

    def _sessions_where(self, f, a="s"):
        cond, params = super()._sessions_where(f, a)
        return f"{cond} AND {a}.session_id <> ?", [*params, HIDDEN.session_id]


def session_ids(df: pd.DataFrame) -> set[str]:
    if "session_id" in df:
        return set(df.session_id)
    if "latest_session_id" in df:
        return set(df.latest_session_id)
    return set()


def every_read(r: Reader) -> dict[str, object]:
    sid, seg = HIDDEN.session_id, HIDDEN.segments[0].segment_id
    return {
        "sessions": r.sessions(), "session_rows": r.session_rows(), "summary": r.summary(),
        "segments": r.segments(sid), "frames": r.frames(sid), "channels": r.channels(sid),
        "segment": r.segment(seg), "label_seconds": r.label_seconds(),
        "session_metrics": r.session_metrics(), "alerts": r.alerts(),
        "volatility_peaks": r.volatility_peaks(),
        "export_segments": r.export_segments(SessionFilter()),
        "aggregates": rollups.aggregates(r, by="team"),
        "person_sessions": people.person_sessions(r), "baselines": people.baselines(r, RULES),
        "n_sessions": r.n_sessions(), "models": r.models(),
    }


def test_every_read_honours_the_one_session_condition(store):
    full, hidden = every_read(Reader(store, operator())), every_read(HidingReader(store, operator()))
    for name, df in full.items():
        if isinstance(df, int):
            assert hidden[name] == df - 1, name
            continue
        if name == "models":  # no run ids in these synthetic sessions
            continue
        if session_ids(df):
            assert HIDDEN.session_id in session_ids(df) or name == "baselines", name
            assert HIDDEN.session_id not in session_ids(hidden[name]), name
    for name in ("segments", "frames", "channels", "segment"):
        assert len(full[name]) and hidden[name].empty, name
    # Roll-ups are computed from the rows the reader sees.
    assert full["aggregates"].sessions.sum() - hidden["aggregates"].sessions.sum() == 1


def test_filters(store):
    r = Reader(store, operator())
    assert set(r.sessions(SessionFilter(agent="a1")).agent_id) == {"a1"}
    assert set(r.sessions(SessionFilter(person="c1")).session_id) == \
        {c.session_id for c in CALLS if c.meta.customer_id == "c1"}
    late = r.sessions(SessionFilter(since="2026-11-09"))
    assert set(late.session_id) == {CALLS[3].session_id, CALLS[4].session_id}
    early = r.sessions(SessionFilter(until="2026-11-09"))
    assert len(early) + len(late) == len(CALLS)
    assert r.sessions(SessionFilter(team="nobody")).empty
    one = SessionFilter(session_ids=(CALLS[0].session_id,))
    segs = r.export_segments(one)
    assert set(segs.session_id) == {CALLS[0].session_id}
    np.testing.assert_allclose(np.stack(segs.embedding.to_numpy()),
                               np.stack([s.embedding for s in CALLS[0].segments
                                         ])[np.argsort([s.start_s for s in CALLS[0].segments])])
