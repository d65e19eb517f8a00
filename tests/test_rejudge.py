"""One source of truth for alerts: re-judging stored rows gives back exactly the stored alerts,
moved thresholds change them as the stored measurements say, and each session is judged by
its own rule set."""
from __future__ import annotations

import pandas as pd
import pytest

from core.insight import rejudged
from core.storage import derived
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.analysis.rules import RulesError, load_rules, tuned
from core.storage.store import Store

KEY = ["session_id", "speaker", "rule", "t_s"]


@pytest.fixture(scope="module")
def reader(views_db) -> Reader:
    return Reader(Store(views_db), operator())


@pytest.fixture(scope="module")
def rules(views_db):
    return load_rules(views_db.with_name("emoscope.toml"))


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in a.columns if c in b.columns]
    pd.testing.assert_frame_equal(a.sort_values(KEY).reset_index(drop=True)[cols],
                                  b.sort_values(KEY).reset_index(drop=True)[cols],
                                  check_dtype=False)


def test_rejudged_alerts_are_exactly_the_stored_ones(reader, rules):
    stored, judged = reader.alerts(), rejudged.judged_alerts(reader, rules)
    assert reader.n_sessions() >= 30
    # not a vacuous equality: every kind fired, under both rule sets
    assert set(stored.rule) == {"angry_streak", "negative_last_quarter", "volatility_p95",
                                "ends_worse", "unreliable_audio", "negative_entry",
                                "cancel_while_angry"}  # a category (core/analysis/categories) too
    assert set(reader.session_metrics().rule_set) == {"default", "diary"}
    same(stored, judged)
    # the same holds for any window: the reference is still every earlier session
    late = SessionFilter(since="2026-11-15", team="support")
    same(reader.alerts(late), rejudged.judged_alerts(reader, rules, late))
    assert 0 < len(reader.alerts(late)) < len(stored)


def test_moved_thresholds_follow_the_stored_measurements(reader, rules):
    m = reader.session_metrics()
    calls = m[m.rule_set == "default"]
    stricter = tuned(rules, "default", {"negative_last_quarter": 0.8, "trend_threshold": 0.5})
    assert stricter != rules and stricter.set_named("diary") == rules.set_named("diary")
    out = rejudged.judged_alerts(reader, stricter)
    watched = calls[calls.speaker == "customer"]
    assert (out.rule == "negative_last_quarter").sum() == (watched.neg_last >= 0.8 - 1e-9).sum()
    assert (out.rule == "ends_worse").sum() == (watched.neg_delta >= 0.5 - 1e-9).sum() > 0
    # the diaries' own rules did not move
    same(reader.alerts()[lambda a: a.rule == "negative_entry"],
         out[out.rule == "negative_entry"])
    # watching the agent too: their last quarters count now
    both = tuned(rules, "default", {"speakers": ("agent", "customer")})
    extra = rejudged.judged_alerts(reader, both)
    agents = calls[calls.speaker == "agent"]
    assert (extra[extra.speaker == "agent"].rule == "negative_last_quarter").sum() == \
        (agents.neg_last >= 0.5 - 1e-9).sum()
    assert tuned(rules, "default", {}) == rules
    # the stored rows tell which sessions another rules file would judge differently
    assert rejudged.stale_sessions(reader, rules) == set()
    assert rejudged.stale_sessions(reader, stricter) == set(calls.session_id)


def test_each_session_is_judged_by_its_rule_set(reader, rules):
    m = reader.session_metrics()
    sets = m.drop_duplicates("session_id").set_index("session_id").rule_set
    diaries = set(sets[sets == "diary"].index)
    assert diaries == set(reader.sessions(SessionFilter(team="wellbeing")).session_id)
    al = reader.alerts()
    assert set(al[al.session_id.isin(diaries)].rule) <= {"negative_entry", "distress_run",
                                                          "volatility_p95", "unreliable_audio"}
    assert "negative_entry" not in set(al[~al.session_id.isin(diaries)].rule)
    # diary responses are the diary set's own
    entry = al[al.rule == "negative_entry"].iloc[0]
    assert entry.suggested_response == rules.set_named("diary").responses_en[entry.emotion]
    assert m[m.rule_set == "diary"].rules_digest.iloc[0] == rules.set_named("diary").digest


def test_alerts_point_at_the_speakers_own_segment(reader):
    """A last-quarter alert opens on the start of the speaker's first segment in that quarter,
    not on the quarter boundary inside someone else's speech."""
    al = reader.alerts(rule="negative_last_quarter")
    for a in al.head(5).itertuples():
        seg = reader.segments(a.session_id)
        mine = seg[(seg.speaker == a.speaker) & (seg.start_s == a.t_s)]
        assert len(mine) == 1, a


def test_recompute_keeps_the_sets(views_db, tmp_path, rules):
    import shutil
    copy = tmp_path / "copy.duckdb"
    shutil.copy(views_db, copy)
    before = Reader(Store(copy), operator()).alerts()
    out = derived.recompute(Store(copy), rules)
    assert out["rules"] == rules.full_digest != rules.digest
    same(before, Reader(Store(copy), operator()).alerts())


def test_rule_sets_in_the_rules_file(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[sets.night]\nteams = ["night"]\n[sets.night.trend]\nthreshold = 0.5\n')
    r = load_rules(f)
    night = r.for_session("night", [])
    assert night.name == "night" and night.trend_threshold == 0.5
    assert night.alerts == r.alerts  # no alerts given: the set keeps the top-level list
    assert r.for_session("day", ["diary"]).name == "diary"  # the packaged diary set stays
    assert r.for_session("day", None) is r
    f.write_text('[sets.diary]\nteams = []\ntags = []\n')  # a set can be switched off
    assert [s.name for s in load_rules(f).sets] == []
    f.write_text('[sets.x]\nteams = ["a"]\nwindow = 3\n')
    with pytest.raises(RulesError, match=r"\[sets.x\]: unknown key"):
        load_rules(f)
