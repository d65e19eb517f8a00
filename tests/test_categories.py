"""Categories (core/analysis/categories): phrases (any, all, near), negation, speaker, part of the call,
voice and fused state; a category of emoscope.toml tags exactly the sessions whose stored
transcripts meet it, before and after a threshold change and `recompute` (no model); its
alerts come back in the what-if; a diary's safeguarding alert is urgent, first in the list."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from core.insight import rejudged, rollups
from core.analysis import categories as C
from core.guard.access import operator
from core.storage.derived import recompute
from core.storage.queries import Reader, SessionFilter
from core.analysis.rules import RulesError, load_rules, tuned
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import (ChannelQuality, Segment, SessionMeta, SessionResult, Utterance,
                        utterance_id_for)
from tests.analytics_fixtures import onehot
from tests.views_fixtures import RULES_TOML


def test_phrases_any_all_near_and_negation():
    cat = lambda **kw: C.Category("c", **kw)  # noqa: E731
    refund = cat(phrases=("refund", "double charge"))
    assert C.said("i want a refund", refund)
    assert not C.said("i want a refunds", refund)  # words, not substrings
    assert not C.said("a refund", cat(phrases=("refund", "double charge"), match="all"))
    assert C.said("refund the double charge", cat(phrases=("refund", "double charge"),
                                                   match="all"))
    near = cat(phrases=("refund", "charge"), match="near", within=3)
    assert C.said("refund for the charge", near)
    assert not C.said("refund for the whole of the last charge", near)
    negated = cat(phrases=("not ... refund",))
    assert C.said("i did not get a refund", negated) and C.said("i didn't get my refund",
                                                                 negated)
    assert not C.said("i want a refund", negated)
    plain = cat(phrases=("cancel",), ignore_negated=True)
    assert C.said("please cancel it", plain) and not C.said("i don't want to cancel", plain)
    assert C.said("我不想活了", cat(phrases=("不想活",)))


def test_raised_voice_is_the_prosody_fact_over_the_utterance(tmp_path):
    """Five customer segments, the fourth an octave up and 10 dB louder than the speaker's
    medians (core/analysis/prosody's raised voice); of the two utterances only the one over it."""
    seg = pd.DataFrame({"channel": [1] * 5, "speaker": ["customer"] * 5,
                        "start_s": [0.0, 2, 4, 6, 8], "end_s": [1.5, 3.5, 5.5, 7.5, 9.5],
                        "pitch_hz": [200.0, 205, 198, 400, 202],
                        "loudness_dbfs": [-30.0, -29, -31, -20, -30]})
    utts = pd.DataFrame({"utterance_id": ["u0", "u1"], "channel": [1, 1],
                         "speaker": ["customer"] * 2, "start_s": [0.0, 5.8],
                         "end_s": [3.5, 9.5], "text": ["i am calling again", "cancel it now"],
                         "voice": ["neutral", "neutral"], "fused": ["neutral", "neutral"]})
    f = tmp_path / "r.toml"
    f.write_text('[[categories]]\nname = "shouting"\nraised_voice = true\n')
    rules = load_rules(f)
    assert C.raised(utts, seg, rules).tolist() == [False, True]
    tags, _ = C.judge("s1", utts, 10.0, rules, seg)
    assert [(t["category"], t["utterance_id"]) for t in tags] == [("shouting", "u1")]
    assert C.judge("s1", utts, 10.0, rules, seg.drop(columns="pitch_hz"))[0] == []


def test_a_category_is_checked_when_the_rules_are_read(tmp_path):
    f = tmp_path / "r.toml"
    for text, message in [
        ('[[categories]]\nname = "x"\nphrases = ["a"]\nseverity = "dire"\n', "severity"),
        ('[[categories]]\nname = "x"\nspeakers = ["customer"]\n', "tag every session"),
        ('[[categories]]\nname = "x"\nphrases = ["a"]\nmatch = "near"\n', "two or more"),
        ('[[categories]]\nname = "x"\nfused = ["furious"]\n', "unknown fused"),
        ('[[categories]]\nname = "angry_streak"\nphrases = ["a"]\n', "differ from the alert"),
    ]:
        f.write_text(text)
        with pytest.raises(RulesError, match=message):
            load_rules(f)


def expected(r: Reader) -> set[str]:
    """The sessions whose stored transcripts meet the packaged `cancel_while_angry`, read by
    hand: the customer says "cancel" (not negated) or "close my account" in an angry voice,
    in the last quarter of the call."""
    u = r.utterances().merge(r.sessions()[["session_id", "duration_s"]], on="session_id")
    said = u.text.map(lambda t: ("cancel" in t.split() and not {"not", "don't"} & set(
        t.split())) or "close my account" in t)
    late = (u.start_s + u.end_s) / 2 >= 0.75 * u.duration_s
    return set(u[said & late & (u.speaker == "customer") & (u.voice == "angry")].session_id)


def test_a_category_tags_exactly_the_sessions_that_meet_it_before_and_after_recompute(
        views_db, tmp_path):
    db = tmp_path / "views.duckdb"
    shutil.copy(views_db, db)
    store, r = Store(db), Reader(Store(db), operator())
    rules = load_rules(views_db.with_name("emoscope.toml"))
    before = expected(r)
    tagged = set(r.categories().query("category == 'cancel_while_angry'").session_id)
    assert before and tagged == before
    assert set(r.sessions(SessionFilter(categories=("cancel_while_angry",))).session_id) == \
        before
    rows = rollups.session_table(r)
    assert set(rows[rows.categories.map(lambda c: "cancel_while_angry" in c)].session_id) == \
        before
    assert set(r.alerts().query("rule == 'cancel_while_angry'").session_id) == before
    # the what-if moves the categories' alerts (unmoved, they are the stored ones:
    # tests/test_rejudge.py)
    twice = rejudged.judged_alerts(r, tuned(rules, "default", {"cancel_while_angry": 2}),
                                   SessionFilter(session_ids=tuple(before)))
    assert len(twice) and set(twice.session_id) <= before
    assert "cancel_while_angry" not in set(twice.rule)

    # The voice is read only when surer: fewer lines sound angry, recompute (no model) says so.
    toml = tmp_path / "emoscope.toml"
    toml.write_text(RULES_TOML + "\n[fusion]\nvoice_confidence = 0.85\n")
    recompute(store, load_rules(toml))
    after = expected(r)
    assert after < before
    assert set(r.categories().query("category == 'cancel_while_angry'").session_id) == after


def test_a_diary_that_speaks_of_self_harm_raises_an_urgent_alert_first(tmp_path):
    """The packaged safeguarding category: not wanting to go on, in a sad voice."""
    rules = load_rules()
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    writer = SessionWriter(store, rules)

    def diary(n: int, text: str, label: str) -> SessionResult:
        sha = f"{n:02d}" * 32
        sid = "s" + sha[:15]
        seg = tuple(Segment(f"{sid}-c0-{i:05d}", 0, "speaker", 4.0 * i, 4.0 * i + 3.5, lab, 0.8,
                            np.array(onehot(lab, 0.8), np.float32), np.full(4, i, np.float32),
                            0.1, 0.0, (), None)
                    for i, lab in enumerate(["angry"] * 3 + [label]))
        utt = (Utterance(utterance_id_for(sid, 0, 0), 0, "speaker", 12.2, 15.3, text, "en",
                         sentiment=-0.5, sentiment_source="vader"),)
        return SessionResult(sid, f"/x/{n}.m4a", f"{n}.m4a", sha, 16.0, 1,
                             SessionMeta(customer_id="p-1", team="wellbeing", tags=("diary",),
                                         recorded_at=f"2026-11-0{n}"),
                             (ChannelQuality(0, "speaker", 16.0, 0.1, 0.0, 14.0, ()),), seg,
                             utterances=utt)

    writer.save_many([diary(1, "i feel helpless and i do not want to go on", "sad"),
                      diary(2, "i want to go on holiday", "sad"),
                      diary(3, "i do not want to go on", "happy")], None)
    r = Reader(store, operator())
    every = r.alerts()
    urgent = every.query("rule == 'safeguarding'")
    assert urgent.session_id.tolist() == ["s" + "01" * 7 + "0"]
    assert urgent.severity.tolist() == ["urgent"]
    # negative words in a sad voice: the sad reply of the diary set, an analyst's words
    assert urgent.suggested_response.iloc[0] == rules.set_named("diary").responses_en["sad"]
    # most severe first: above the angry streaks of the same diaries
    summary = r.summary()
    assert summary.session_id.iloc[0] == urgent.session_id.iloc[0]
    assert summary.severity.iloc[0] == "urgent" and set(every.severity) > {"urgent"}
    table = rollups.session_table(r)
    assert int(table.set_index("session_id").urgent[urgent.session_id.iloc[0]]) == 1
    assert pd.Series(table.alerts).sum() == len(every)
