"""Metrics over hand-built segment sequences; every expected value is worked out in a comment."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.analysis import metrics as M
from core.analysis.fusion import DISAGREEMENTS
from core.base.labels import LABELS
from core.analysis.rules import RulesError, load_rules
from tests.analytics_fixtures import channels, segments

RULES = load_rules(Path(__file__).resolve().parent.parent / "core" / "analysis" / "default_rules.toml")


def row(df, speaker):
    return df[df.speaker == speaker].iloc[0]


# -- single segments -------------------------------------------------------------------------
@pytest.mark.parametrize("label, conf, expected", [
    ("unknown", 0.95, "request_clarification"),  # uncertain label, however confident
    ("other", 0.95, "request_clarification"),
    ("happy", 0.39, "request_clarification"),  # below the threshold
    ("happy", 0.40, None),  # the threshold itself is confident enough
    ("angry", 0.83, None),
])
def test_fallback_action(label, conf, expected):
    assert M.fallback_action(label, conf, 0.4) == expected


# -- volatility ------------------------------------------------------------------------------
def test_volatility_is_mean_consecutive_distance():
    emb = np.array([[0, 0], [3, 4], [3, 4], [0, 0]])  # steps 5, 0, 5
    assert M.pair_distances(emb).tolist() == [5.0, 0.0, 5.0]
    assert M.volatility(emb) == pytest.approx(10 / 3)
    assert M.volatility(emb[:1]) is None  # fewer than two segments
    assert M.volatility(emb[:0]) is None


def test_rolling_volatility_uses_the_last_window_segments():
    emb = np.array([[0], [1], [3], [6], [10], [15], [21]])  # steps 1 2 3 4 5 6
    roll = M.rolling_volatility(emb, window=5)
    assert math.isnan(roll[0])
    # segment i: mean of the steps among the last 5 segments ending at i (at most 4 steps)
    assert roll[1:].tolist() == pytest.approx([1, 1.5, 2, 2.5, (2 + 3 + 4 + 5) / 4,
                                               (3 + 4 + 5 + 6) / 4])
    assert M.rolling_volatility(emb, window=2)[1:].tolist() == [1, 2, 3, 4, 5, 6]


def test_score_volatility_is_mean_total_variation():
    p = np.eye(9)[0]
    q = np.eye(9)[1]
    r = (p + q) / 2
    assert M.tv_distance(p, q) == 1.0
    assert M.tv_distance(q, r) == 0.5
    assert M.score_volatility(np.stack([p, q, r])) == pytest.approx(0.75)
    assert M.score_volatility(np.stack([p])) is None


def test_label_switches():
    assert M.label_switches(["a", "a", "b", "a", "a"]) == 2
    assert M.label_switches(["a"]) == 0


# -- trend -------------------------------------------------------------------------------------
@pytest.mark.parametrize("delta, expected", [
    (0.2, "worsening"), (0.7 - 0.5, "worsening"),  # inclusive, rounding included
    (0.19, "stable"), (0.0, "stable"), (-0.19, "stable"),
    (-0.2, "improving"), (-0.6, "improving"), (None, None),
])
def test_trend_threshold(delta, expected):
    assert M.trend(delta, 0.2) == expected


def test_mix_and_quarters():
    # 100 s session; quarters are decided by each segment's midpoint
    seg = segments([("speaker", 0, 10, "angry"),  # mid 5: first quarter
                    ("speaker", 10, 20, "neutral"),  # mid 15: first quarter
                    ("speaker", 40, 50, "sad"),  # mid 45: neither
                    ("speaker", 70, 80, "happy"),  # mid 75: last quarter (>= 75)
                    ("speaker", 80, 100, "sad")])  # mid 90: last quarter
    m = row(M.session_metrics("s1", seg, None, 100.0, RULES), "speaker")
    # whole session: angry 10, neutral 10, sad 30, happy 10 of 60 s talk
    assert m.mix == pytest.approx([10 / 60, 0, 0, 10 / 60, 10 / 60, 0, 30 / 60, 0, 0])
    assert m.neg_share == pytest.approx(40 / 60)
    assert m.neg_first == pytest.approx(0.5)  # angry 10 of 20
    assert m.neg_last == pytest.approx(20 / 30)  # sad 20 of 30
    assert m.neg_delta == pytest.approx(20 / 30 - 0.5)  # 0.167 < 0.2
    assert m.trend == "stable"
    assert m.mix_last == pytest.approx([0, 0, 0, 10 / 30, 0, 0, 20 / 30, 0, 0])


def test_trend_worsening_and_missing_quarter():
    worse = segments([("speaker", 0, 10, "neutral"), ("speaker", 90, 100, "angry")])
    assert row(M.session_metrics("s1", worse, None, 100.0, RULES), "speaker").trend == \
        "worsening"
    early = segments([("speaker", 0, 10, "neutral"), ("speaker", 20, 30, "angry")])
    m = row(M.session_metrics("s1", early, None, 100.0, RULES), "speaker")
    assert pd.isna(m.neg_last)
    assert m.trend is None  # nothing said in the last quarter: no trend


# -- conversation ------------------------------------------------------------------------------
CALL = [("agent", 0, 4, "neutral"), ("customer", 3, 8, "angry"),
        ("agent", 10, 14, "neutral"), ("customer", 12, 20, "angry"),
        ("customer", 22.5, 25, "neutral")]


def test_conversation_two_channels():
    m = M.session_metrics("s1", segments(CALL), channels(("agent", ()), ("customer", ())),
                          30.0, RULES)
    assert m.speaker.tolist() == ["agent", "customer", "all"]
    agent, cust, every = row(m, "agent"), row(m, "customer"), row(m, "all")
    assert agent.talk_s == 8 and cust.talk_s == 5 + 8 + 2.5
    # speech union [0,8] [10,20] [22.5,25] = 20.5 s of 30; gaps 2 and 2.5
    assert every.talk_s == 20.5
    assert every.silence_s == 9.5 and every.longest_silence_s == 2.5
    # both talk in [3,4] and [12,14]
    assert every.overlap_s == 3 and agent.overlap_s == 3 and cust.overlap_s == 3
    # customer starts at 3 (agent 0-4 talking) and at 12 (agent 10-14): two interruptions
    assert (agent.interruptions, cust.interruptions, every.interruptions) == (0, 2, 2)
    # by start: A C A C C → turns A, C, A, C
    assert (agent.turns, cust.turns, every.turns) == (2, 2, 4)
    assert pd.isna(agent.silence_s)  # silence is a whole-session figure


def test_single_channel_has_no_overlap_or_interruptions():
    seg = segments([("speaker", 0, 2, "neutral"), ("speaker", 5, 6, "sad")])
    every = row(M.session_metrics("s1", seg, None, 10.0, RULES), "all")
    assert every.turns == 1
    assert pd.isna(every.overlap_s) and pd.isna(every.interruptions)
    assert every.silence_s == 7 and every.longest_silence_s == 3


def test_speaker_and_session_volatility():
    # customer embeddings 0, 2, 6 (steps 2, 4); agent 0, 1 (step 1); all = pooled mean
    seg = segments([("customer", 0, 1, "angry", 0.9, [0]), ("agent", 1, 2, "neutral", 0.9, [0]),
                    ("customer", 2, 3, "angry", 0.9, [2]), ("agent", 3, 4, "happy", 0.9, [1]),
                    ("customer", 4, 5, "sad", 0.9, [6])])
    m = M.session_metrics("s1", seg, None, 6.0, RULES)
    assert row(m, "customer").volatility == pytest.approx(3)
    assert row(m, "agent").volatility == pytest.approx(1)
    assert row(m, "all").volatility == pytest.approx((2 + 4 + 1) / 3)
    assert row(m, "customer").rolling_volatility_max == pytest.approx(3)
    # labels: customer angry angry sad (1 switch), agent neutral happy (1) over 0.1 min
    assert row(m, "customer").label_switches == 1
    assert row(m, "all").switches_per_min == pytest.approx(2 / 0.1)
    # one-hot-ish scores at 0.9: moving the top label moves 0.9 - 0.0125 of mass
    assert row(m, "customer").score_volatility == pytest.approx((0 + (0.9 - 0.1 / 8)) / 2)


def test_segment_updates_follow_each_speaker():
    seg = segments([("customer", 0, 1, "angry", 0.9, [0]), ("agent", 1, 2, "other", 0.9, [5]),
                    ("customer", 2, 3, "angry", 0.3, [4]), ("agent", 3, 4, "happy", 0.9, [5])])
    up = M.segment_updates(seg, window=5, threshold=0.4)
    assert up.segment_id.tolist() == ["s1-c1-00000", "s1-c0-00000", "s1-c1-00001",
                                      "s1-c0-00001"]
    roll = up.rolling_volatility.tolist()
    assert math.isnan(roll[0]) and math.isnan(roll[1]) and roll[2:] == [4.0, 0.0]
    assert [None if pd.isna(x) else x for x in up.fallback_action] == [
        None, "request_clarification", "request_clarification", None]


def test_missing_embeddings_give_no_volatility():
    seg = segments([("speaker", 0, 1, "happy"), ("speaker", 1, 2, "sad")])
    seg["embedding"] = [[], []]
    m = row(M.session_metrics("s1", seg, None, 2.0, RULES), "speaker")
    assert pd.isna(m.volatility) and m.score_volatility > 0


# -- low confidence ----------------------------------------------------------------------------
def test_unreliable_speaker_and_cause():
    seg = segments([("speaker", 0, 1, "unknown", 0.9), ("speaker", 1, 2, "happy", 0.2),
                    ("speaker", 2, 3, "happy", 0.9)])
    m = row(M.session_metrics("s1", seg, channels(("speaker", ("clipped",))), 3.0, RULES),
            "speaker")
    assert m.low_conf_n == 2 and m.low_conf_share == pytest.approx(2 / 3)
    assert m.unreliable and m.unreliable_cause == "clipped"


def test_unreliable_cause_falls_back_to_segment_flags_then_to_plain_words():
    assert M.unreliable_cause([()], [["too_short"], []]) == "too short"
    assert M.unreliable_cause([("too_quiet", "clipped")], []) == "too quiet, clipped"
    assert M.unreliable_cause([()], [[]]).startswith("no quality flag")


def test_reliable_below_share():
    seg = segments([("speaker", 0, 1, "unknown"), ("speaker", 1, 2, "happy"),
                    ("speaker", 2, 3, "sad")])
    m = row(M.session_metrics("s1", seg, None, 3.0, RULES), "speaker")
    assert m.low_conf_share == pytest.approx(1 / 3) and not m.unreliable
    assert pd.isna(m.unreliable_cause)


def test_silent_channel_still_gets_a_row():
    seg = segments([("customer", 0, 1, "happy")])
    m = M.session_metrics("s1", seg, channels(("agent", ("too_quiet",)), ("customer", ())),
                          2.0, RULES)
    agent = row(m, "agent")
    assert agent.n_segments == 0 and agent.talk_s == 0 and agent.turns == 0


# -- rules file --------------------------------------------------------------------------------
def test_repo_rules_file_matches_packaged_defaults():
    root = Path(__file__).resolve().parent.parent
    shipped, repo = RULES, load_rules(root / "emoscope.toml")
    assert repo == shipped and repo.digest == shipped.digest
    assert repo.responses_zh == shipped.responses_zh
    # a reply per emotion, and per disagreement of voice and words (core/analysis/fusion)
    assert set(shipped.responses_en) == set(LABELS) | set(DISAGREEMENTS) == \
        set(shipped.responses_zh)
    assert shipped.confidence_threshold == 0.4 and shipped.window == 5


def test_user_rules_overlay_defaults(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[trend]\nthreshold = 0.3\n\n[[alerts]]\nrule = "sad_run"\nkind = "streak"\n'
                 'labels = ["sad"]\nmin_count = 2\nspeakers = ["*"]\nseverity = "high"\n')
    r = load_rules(f)
    assert r.trend_threshold == 0.3 and r.confidence_threshold == 0.4  # the rest stays default
    assert [a.rule for a in r.alerts] == ["sad_run"]  # a given alert list replaces the default
    assert r.digest != RULES.digest


@pytest.mark.parametrize("text, message", [
    ('[[alerts]]\nrule = "x"\nkind = "nope"\n', "kind 'nope'"),
    ('[[alerts]]\nrule = "x"\nkind = "streak"\nlabels = ["furious"]\n', "unknown label"),
    ('[[alerts]]\nrule = "x"\nkind = "ends_worse"\nseverity = "dire"\n', "severity"),
    ("[trend\n", "not valid TOML"),
    ('[volatility]\nwindow = 1\n', "window"),
])
def test_bad_rules_say_what_is_wrong(tmp_path, text, message):
    f = tmp_path / "r.toml"
    f.write_text(text)
    with pytest.raises(RulesError, match=message) as e:
        load_rules(f)
    assert "\n" not in str(e.value)



def test_digest_follows_stored_rules_only():
    import dataclasses
    assert dataclasses.replace(RULES, baseline_min_sessions=9).digest == RULES.digest
    assert dataclasses.replace(RULES, confidence_threshold=0.5).digest != RULES.digest
    assert dataclasses.replace(RULES, responses_en={}).digest != RULES.digest
