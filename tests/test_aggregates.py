"""Roll-ups and per-person baselines over hand-built session_metrics rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.analysis.aggregates import aggregate, period_start, person_baselines, person_sessions
from core.base.labels import LABELS
from core.analysis.rules import load_rules

RULES = load_rules(Path(__file__).resolve().parent.parent / "core" / "analysis" / "default_rules.toml")


def mix(**shares) -> list[float]:
    return [shares.get(lab, 0.0) for lab in LABELS]


def metric(sid, speaker, *, agent=None, customer=None, team="T", rec=None, ing="2026-11-20",
           talk=100.0, neg=0.0, vol=None, m=None, n=5):
    return {"session_id": sid, "speaker": speaker, "agent_id": agent, "customer_id": customer,
            "team": team, "recorded_at": pd.Timestamp(rec) if rec else pd.NaT,
            "ingested_at": pd.Timestamp(ing), "talk_s": talk, "neg_share": neg,
            "volatility": vol, "mix": m or mix(neutral=1.0), "n_segments": n}


# 2026-11-02 and 2026-11-09 are Mondays
SESSIONS = pd.DataFrame([
    metric("s1", "all", agent="a1", customer="c1", rec="2026-11-02 10:00", talk=100, neg=0.2,
           vol=1.0),
    metric("s2", "all", agent="a1", customer="c2", rec="2026-11-04 09:00", talk=300, neg=0.6,
           vol=3.0),
    metric("s3", "all", agent="a1", customer="c1", rec="2026-11-09 12:00", talk=50, neg=0.0),
    metric("s4", "all", agent="a2", rec="2026-11-03 08:00", talk=100, neg=1.0, vol=2.0),
    metric("s5", "all", customer="c3", ing="2026-11-05 16:00", talk=10, neg=0.5, vol=4.0),
])
ALERTS = pd.DataFrame({"session_id": ["s1", "s2", "s2", "s4"],
                       "speaker": ["customer", "customer", "agent", "customer"],
                       "severity": ["medium", "high", "low", "high"]})


def test_period_start_is_the_day_or_its_monday():
    ts = pd.Series(pd.to_datetime(["2026-11-04 09:00", "2026-11-08 23:59", "2026-11-09 00:00"]))
    assert period_start(ts, "day").dt.strftime("%Y-%m-%d").tolist() == \
        ["2026-11-04", "2026-11-08", "2026-11-09"]
    assert period_start(ts, "week").dt.strftime("%Y-%m-%d").tolist() == \
        ["2026-11-02", "2026-11-02", "2026-11-09"]
    with pytest.raises(ValueError, match="period"):
        period_start(ts, "month")


def test_per_agent_by_week():
    out = aggregate(SESSIONS, ALERTS, by="agent", period="week")
    assert out.key.tolist() == ["a1", "a1", "a2"]  # s5 has no agent: left out
    a1 = out.iloc[0]
    assert a1.period_start == pd.Timestamp("2026-11-02") and a1.sessions == 2
    assert a1.talk_s == 400
    assert a1.negative_share == pytest.approx((0.2 * 100 + 0.6 * 300) / 400)  # 0.5
    assert a1.mean_volatility == pytest.approx(2.0)
    assert (a1.alerts, a1.high_alerts) == (3, 1)
    later = out.iloc[1]
    assert later.period_start == pd.Timestamp("2026-11-09") and later.sessions == 1
    assert pd.isna(later.mean_volatility) and later.alerts == 0
    a2 = out.iloc[2]
    assert (a2.negative_share, a2.alerts, a2.high_alerts) == (1.0, 1, 1)


def test_per_team_by_day_uses_ingest_date_when_no_recording_date():
    out = aggregate(SESSIONS, ALERTS, by="team", period="day")
    days = out.period_start.dt.strftime("%Y-%m-%d").tolist()
    assert days == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", "2026-11-09"]
    assert out.sessions.sum() == 5
    assert out.iloc[3].negative_share == 0.5  # s5, dated by its ingest day


def test_per_customer_for_one_speaker_counts_that_speakers_alerts():
    rows = pd.concat([SESSIONS, pd.DataFrame([
        metric("s1", "customer", agent="a1", customer="c1", rec="2026-11-02 10:00", talk=40,
               neg=0.5, vol=2.0)])], ignore_index=True)
    out = aggregate(rows, ALERTS, by="customer", period="week", speaker="customer")
    assert out.key.tolist() == ["c1"] and out.iloc[0].alerts == 1  # s1's customer alert


def test_unknown_grouping_is_a_clear_error():
    with pytest.raises(ValueError, match="by must be one of"):
        aggregate(SESSIONS, ALERTS, by="region")


# -- baselines -----------------------------------------------------------------------------
HISTORY = pd.DataFrame([
    metric("h1", "customer", customer="c1", agent="a1", rec="2026-11-01", neg=0.5, vol=1.0,
           m=mix(angry=0.5, neutral=0.5)),
    metric("h2", "customer", customer="c1", agent="a1", rec="2026-11-02", neg=0.0, vol=2.0,
           m=mix(neutral=1.0)),
    metric("h3", "speaker", customer="c1", rec="2026-11-03", neg=0.25, vol=3.0,
           m=mix(angry=0.25, neutral=0.75)),
    metric("h4", "customer", customer="c1", agent="a1", rec="2026-11-04", neg=1.0, vol=5.0,
           m=mix(sad=1.0)),
    metric("h1", "agent", customer="c1", agent="a1", rec="2026-11-01", vol=1.0),
    metric("h2", "agent", customer="c1", agent="a1", rec="2026-11-02", vol=1.0),
    metric("h4", "agent", customer="c1", agent="a1", rec="2026-11-04", vol=1.0, n=0),
    metric("h1", "all", customer="c1", agent="a1", rec="2026-11-01"),
])


def test_person_sessions_map_roles_to_people():
    ps = person_sessions(HISTORY)
    # agent rows belong to a1, customer and diary rows to c1; all rows and silent rows drop
    assert ps.groupby("person").session_id.apply(list).to_dict() == {
        "a1": ["h1", "h2"], "c1": ["h1", "h2", "h3", "h4"]}


def test_baseline_and_departure_by_hand():
    b = person_baselines(HISTORY, RULES).set_index("person")
    c1 = b.loc["c1"]
    # earlier sessions h1-h3: mean mix angry 0.25, neutral 0.75; latest h4 all sad
    assert c1.baseline_sessions == 3 and c1.latest_session_id == "h4"
    assert c1.baseline_mix == pytest.approx(mix(angry=0.25, neutral=0.75))
    assert c1.mix_distance == pytest.approx(0.5 * (0.25 + 0.75 + 1.0))  # 1.0
    assert c1.baseline_neg_share == pytest.approx(0.25) and c1.neg_share_delta == 0.75
    # volatility 1, 2, 3: mean 2, sd 1 → latest 5 is 3 sd above
    assert c1.baseline_volatility == 2 and c1.baseline_volatility_sd == pytest.approx(1)
    assert c1.volatility_z == pytest.approx(3)
    assert c1.departs and c1.status == "departs from baseline" and c1.roles == "customer,speaker"
    a1 = b.loc["a1"]
    assert a1.baseline_sessions == 1 and not a1.departs and a1.status == "no baseline yet"


def test_within_baseline_when_close():
    rows = HISTORY[HISTORY.session_id != "h4"].copy()
    rows = pd.concat([rows, pd.DataFrame([metric(
        "h5", "customer", customer="c1", rec="2026-11-05", neg=0.25, vol=2.5,
        m=mix(angry=0.3, neutral=0.7))])], ignore_index=True)
    c1 = person_baselines(rows, RULES).set_index("person").loc["c1"]
    assert c1.mix_distance == pytest.approx(0.05)  # |0.3 − 0.25| + |0.7 − 0.75|, halved
    assert c1.volatility_z == pytest.approx(0.5)
    assert not c1.departs and c1.status == "within baseline"
    assert np.isclose(sum(c1.baseline_mix), 1.0)


def test_baseline_starts_at_min_sessions():
    rows = HISTORY[HISTORY.session_id.isin(["h1", "h2", "h4"])]
    c1 = person_baselines(rows, RULES).set_index("person").loc["c1"]
    assert RULES.baseline_min_sessions == 2 and c1.baseline_sessions == 2
    # volatility 1 and 2: mean 1.5, sd √0.5; latest 5
    assert c1.volatility_z == pytest.approx(3.5 / np.sqrt(0.5))
    assert c1.departs


def test_journey_judges_every_entry_against_the_ones_before_it():
    from core.analysis.aggregates import journey
    ps = person_sessions(HISTORY)
    j = journey(ps[ps.person == "c1"], RULES)
    assert j.session_id.tolist() == ["h1", "h2", "h3", "h4"]
    assert j.status.tolist()[:2] == ["no baseline yet"] * 2  # min_sessions = 2 earlier ones
    h3 = j.iloc[2]  # against h1, h2: negative 0.5 and 0.0 → mean 0.25, sd √0.125
    assert h3.baseline_neg_share == pytest.approx(0.25)
    assert h3.baseline_neg_share_sd == pytest.approx(np.sqrt(0.125))
    z = RULES.baseline_volatility_z
    assert h3.neg_share_lo == pytest.approx(0.25 - z * np.sqrt(0.125))
    assert h3.volatility_hi == pytest.approx(1.5 + z * np.sqrt(0.5))
    # negative share 0.25 sits on the mean, but volatility 3 is 2.1 sd above 1.5: outside
    assert h3.neg_share_z == pytest.approx(0.0) and h3.volatility > h3.volatility_hi
    assert h3.volatility_z == pytest.approx(1.5 / np.sqrt(0.5)) and h3.departs
    # an entry is judged as `baseline` judges it when it is the latest
    early = person_baselines(HISTORY[HISTORY.session_id != "h4"], RULES).set_index("person")
    assert early.loc["c1", "latest_session_id"] == "h3" and early.loc["c1", "departs"]
    last = j.iloc[-1]
    b = person_baselines(HISTORY, RULES).set_index("person").loc["c1"]
    assert last.departs == b.departs and last.mix_distance == pytest.approx(b.mix_distance)
