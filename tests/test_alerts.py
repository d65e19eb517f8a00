"""Alert rules over hand-built sessions: when each fires, when it does not, and what it says."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from core.analysis.alerts import Ranked, streaks
from core.analysis.analytics import Reference, analyze
from core.analysis.rules import load_rules
from tests.analytics_fixtures import channels, segments

RULES = load_rules(Path(__file__).resolve().parent.parent / "core" / "analysis" / "default_rules.toml")
CALL_CHANNELS = channels(("agent", ()), ("customer", ()))


def with_rule(rules, name, **changes):
    return dataclasses.replace(rules, alerts=tuple(
        dataclasses.replace(a, **changes) if a.rule == name else a for a in rules.alerts))


def fired(analysis, rule):
    return analysis.alerts[analysis.alerts.rule == rule]


def test_streaks_finds_maximal_runs():
    labels = ["neutral", "angry", "angry", "angry", "angry", "neutral", "angry", "angry"]
    assert streaks(labels, ("angry",)) == [(1, 4), (6, 2)]
    assert streaks(["sad", "angry", "happy"], ("angry", "sad")) == [(0, 2)]


def test_angry_streak_fires_once_per_run_of_three_or_more():
    labels = ["neutral", "angry", "angry", "angry", "angry", "neutral", "angry", "angry"]
    seg = segments([("customer", 10 * i, 10 * i + 8, lab) for i, lab in enumerate(labels)] +
                   [("agent", 10 * i + 8, 10 * i + 10, "angry") for i in range(4)])
    a = analyze("s1", seg, CALL_CHANNELS, 80.0, RULES)
    hits = fired(a, "angry_streak")
    # the customer's run at segments 1-4 only; the run of 2 is short, the agent is not watched
    assert len(hits) == 1
    hit = hits.iloc[0]
    assert (hit.speaker, hit.t_s, hit.severity, hit.emotion) == ("customer", 10.0, "high", "angry")
    assert hit.detail == "angry in 4 consecutive segments from 10.0 s to 48.0 s"
    assert hit.suggested_response == RULES.responses_en["angry"]
    assert hit.suggested_response_zh == "您先别着急,我马上为您联系人工客服。"


def test_negative_last_quarter_share():
    # 40 s session, last quarter from 30 s: sad 6 s and neutral 4 s → share 0.6
    seg = segments([("customer", 0, 10, "neutral"), ("customer", 30, 36, "sad"),
                    ("customer", 36, 40, "neutral")])
    a = analyze("s1", seg, CALL_CHANNELS, 40.0, RULES)
    hit = fired(a, "negative_last_quarter").iloc[0]
    assert hit.t_s == 30.0 and hit.emotion == "sad" and hit.severity == "medium"
    assert "0.60" in hit.detail
    stricter = with_rule(RULES, "negative_last_quarter", min_share=0.61)
    assert fired(analyze("s1", seg, CALL_CHANNELS, 40.0, stricter),
                 "negative_last_quarter").empty


def test_ends_worse_follows_the_trend_threshold():
    # first quarter all neutral (0.0), last quarter angry 3 of 10 s (0.3): delta +0.3
    seg = segments([("speaker", 0, 10, "neutral"), ("speaker", 30, 37, "neutral"),
                    ("speaker", 37, 40, "angry")])
    a = analyze("s1", seg, None, 40.0, RULES)
    hit = fired(a, "ends_worse").iloc[0]
    assert hit.t_s == 30.0 and hit.emotion == "angry" and hit.severity == "low"
    assert "+0.30" in hit.detail
    assert fired(a, "negative_last_quarter").empty  # 0.3 < 0.5
    calmer = dataclasses.replace(RULES, trend_threshold=0.35)
    assert fired(analyze("s1", seg, None, 40.0, calmer), "ends_worse").empty


def test_unreliable_audio_alert_names_the_cause():
    seg = segments([("speaker", 0, 1, "happy"), ("speaker", 2, 3, "unknown", 0.9),
                    ("speaker", 4, 5, "sad", 0.1)])
    a = analyze("s1", seg, channels(("speaker", ("too_quiet",))), 6.0, RULES)
    hit = fired(a, "unreliable_audio").iloc[0]
    assert hit.t_s == 2.0 and hit.emotion == "unknown"  # first low-confidence segment
    assert "67%" in hit.detail and hit.detail.endswith("likely cause: too quiet")
    assert hit.suggested_response == RULES.responses_en["unknown"]


def test_volatility_above_the_95th_percentile_of_earlier_sessions():
    # customer embeddings 0, 10, 40: steps 10 and 30 → volatility 20; rolling peaks at 20.0 s
    seg = segments([("customer", 0, 5, "neutral", 0.9, [0]), ("customer", 10, 15, "sad", 0.9, [10]),
                    ("customer", 20, 25, "angry", 0.9, [40])])
    ref = {"customer": [float(v) for v in range(1, 21)]}  # p95 = 19 + 0.05 × (20 − 19) = 19.05
    assert np.percentile(ref["customer"], 95) == pytest.approx(19.05)
    hit = fired(analyze("s1", seg, CALL_CHANNELS, 30.0, RULES, ref), "volatility_p95").iloc[0]
    assert hit.speaker == "customer" and hit.t_s == 20.0 and hit.emotion == "angry"
    assert "20.000 above the 95th percentile 19.050 of 20 earlier customer sessions" in hit.detail
    # below the limit: earlier sessions were as jumpy
    higher = {"customer": [v + 5 for v in ref["customer"]]}
    assert fired(analyze("s1", seg, CALL_CHANNELS, 30.0, RULES, higher), "volatility_p95").empty
    # 19 earlier sessions are too few for the default min_reference of 20
    few = {"customer": ref["customer"][:19]}
    assert fired(analyze("s1", seg, CALL_CHANNELS, 30.0, RULES, few), "volatility_p95").empty
    # another role's history is not this role's reference
    other = {"agent": ref["customer"]}
    assert fired(analyze("s1", seg, CALL_CHANNELS, 30.0, RULES, other), "volatility_p95").empty


def test_a_ranked_reference_gives_numpys_percentile_to_the_bit_and_the_same_alert():
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 20, 57, 400):
        values = rng.gamma(2.0, 0.3, n).round(int(rng.integers(1, 6)))  # ties too
        ranked = Ranked(values[: n // 2])
        for v in values[n // 2:]:  # one at a time, as sessions arrive
            ranked.add([v])
        for q in (0, 5, 50, 75.5, 90, 95, 99.9, 100, float(rng.uniform(0, 100))):
            assert ranked.percentile(q) == float(np.percentile(values, q)), (n, q)
    seg = segments([("customer", 0, 5, "neutral", 0.9, [0]), ("customer", 10, 15, "sad", 0.9, [10]),
                    ("customer", 20, 25, "angry", 0.9, [40])])
    plain = {"customer": [float(v) for v in range(1, 21)]}
    ref = Reference()
    ref.add([{"speaker": "customer", "volatility": v} for v in plain["customer"]])
    as_list = analyze("s1", seg, CALL_CHANNELS, 30.0, RULES, plain).alerts
    as_ranked = analyze("s1", seg, CALL_CHANNELS, 30.0, RULES, ref.ranked).alerts
    assert "volatility_p95" in set(as_ranked.rule)
    assert as_ranked.equals(as_list)


def test_reference_collects_per_role_volatility():
    seg = segments([("customer", 0, 1, "sad", 0.9, [0]), ("customer", 1, 2, "sad", 0.9, [3]),
                    ("agent", 2, 3, "happy", 0.9, [0])])  # agent has one segment: no volatility
    ref = Reference()
    ref.add(analyze("s1", seg, CALL_CHANNELS, 3.0, RULES).metrics)
    assert {sp: v.tolist() for sp, v in ref.values.items()} == {"customer": [3.0]}


def test_custom_rules_file(tmp_path):
    f = tmp_path / "emoscope.toml"
    f.write_text('[[alerts]]\nrule = "sad_pair"\nkind = "streak"\nlabels = ["sad", "fearful"]\n'
                 'min_count = 2\nspeakers = ["agent"]\nseverity = "low"\n')
    rules = load_rules(f)
    seg = segments([("agent", 0, 1, "fearful"), ("agent", 2, 3, "sad"), ("agent", 4, 5, "sad"),
                    ("customer", 1, 2, "sad"), ("customer", 3, 4, "sad")])
    a = analyze("s1", seg, CALL_CHANNELS, 5.0, rules)
    assert a.alerts.rule.tolist() == ["sad_pair"]  # only the custom rule exists now
    hit = a.alerts.iloc[0]
    assert hit.speaker == "agent" and hit.emotion == "sad"  # 2 sad beat 1 fearful
    assert hit.detail.startswith("sad/fearful in 3 consecutive segments")


def test_alerts_come_in_time_order():
    labels = ["neutral"] * 2 + ["angry"] * 3 + ["sad"] * 3
    seg = segments([("customer", 5 * i, 5 * i + 4, lab) for i, lab in enumerate(labels)])
    a = analyze("s1", seg, CALL_CHANNELS, 40.0, RULES)
    assert a.alerts.t_s.tolist() == sorted(a.alerts.t_s.tolist())
    assert set(a.alerts.rule) == {"angry_streak", "negative_last_quarter", "ends_worse"}


def test_every_rule_kind_has_one_check_and_the_rules_file_knows_the_registry():
    from core.analysis.alerts import ALERT_KINDS, register_alert_kind, session_checks, store_relative
    from core.analysis.rules import RulesError, _alert
    assert sorted([*session_checks(), *store_relative()]) == sorted(ALERT_KINDS)
    assert set(store_relative()) == {"volatility_percentile"}
    with pytest.raises(RulesError, match="has kind 'spoke'"):
        _alert({"rule": "r", "kind": "spoke"}, "x.toml")
    register_alert_kind("spoke")(lambda *a: [])
    try:
        assert _alert({"rule": "r", "kind": "spoke"}, "x.toml").kind == "spoke"
    finally:
        ALERT_KINDS.pop("spoke")
