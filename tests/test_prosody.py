"""Prosody: pitch, loudness and speaking rate per segment (ingest/prosody.py), the raised-voice
fact (core/analysis/prosody.py), its alert on stored sessions and on the live stream, and the curves on
the Session page's timeline."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from core.insight import rejudged
from core.storage.analysers import Found
from core.analysis.analytics import analyze, judge_live
from core.analysis.prosody import HOP_S, raised_voice
from ingest.prosody import measure, speaking_rate
from ingest.speech_to_text import Heard
from tests.analytics_fixtures import channels, segments
from tests.store_fixtures import RULES

SR = 16_000


def tone(hz: float, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_a_tone_has_its_pitch_and_level_and_a_pause_has_no_pitch():
    x = np.concatenate([tone(220.0, 2.0, 0.2), np.zeros(SR // 2, np.float32)])
    m = measure(x, SR)
    assert m["pitch_hz"] == pytest.approx(220.0, rel=0.01)
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64)))
    assert m["loudness_dbfs"] == pytest.approx(20 * np.log10(rms), abs=0.01)
    # one value per 0.1 s, centred as the emotion curves are: 2.5 s → 25 points
    pitch, level = np.array(m["pitch_curve"]), np.array(m["loudness_curve"])
    assert len(pitch) == len(level) == round(x.size / SR / HOP_S)
    assert pitch[:19] == pytest.approx(220.0, rel=0.01)  # the tone
    assert (pitch[-4:] == 0).all() and (level[-4:] < -90).all()  # the pause: unvoiced
    assert level[5] == pytest.approx(20 * np.log10(0.2 / np.sqrt(2)), abs=0.1)
    assert measure(np.zeros(SR, np.float32), SR)["pitch_hz"] is None  # silence has no pitch


def test_speaking_rate_is_the_words_heard_a_second():
    said = Found(more=(Heard("i want to cancel my account"), "pocketsphinx"))
    assert speaking_rate(said, 10.0, 13.0) == 2.0
    assert speaking_rate(Found(more=(Heard(""), "pocketsphinx")), 0.0, 2.0) is None
    assert speaking_rate(Found(more=(Heard("我要退款", "zh"), "sensevoice")), 0.0, 2.0) == 2.0
    assert speaking_rate(Found(), 0.0, 2.0) is None  # no speech-to-text: no rate
    assert speaking_rate(None, 0.0, 2.0) is None


def voices(customer_pitch, customer_db, agent=(220.0, -20.0)) -> pd.DataFrame:
    """A call: the agent's segments (steady) between the customer's, measured as given."""
    rows = []
    for i in range(len(customer_pitch)):
        rows += [("agent", 10 * i, 10 * i + 4, "neutral"), ("customer", 10 * i + 5,
                                                             10 * i + 9, "angry")]
    seg = segments(rows)
    cust = (seg.speaker == "customer").to_numpy()
    seg["pitch_hz"], seg["loudness_dbfs"] = agent
    seg.loc[cust, "pitch_hz"] = np.asarray(customer_pitch, float)
    seg.loc[cust, "loudness_dbfs"] = np.asarray(customer_db, float)
    return seg


def test_raised_voice_is_pitch_and_loudness_above_the_speakers_own_median():
    # the customer's medians: 102 Hz and -29 dBFS; 125 Hz is +3.5 semitones, 115 Hz +2.1
    seg = voices([100, 102, 98, 100, 125, 125, 115], [-30, -30, -31, -29, -22, -28, -22])
    raised = raised_voice(seg)
    assert seg[raised].start_s.tolist() == [45]  # high AND loud; high only, loud only: not
    assert not raised[seg.speaker == "agent"].any()
    assert not raised_voice(seg, pitch_semitones=4.0).any()
    assert seg[raised_voice(seg, loudness_db=1.0)].start_s.tolist() == [45, 55]
    few = seg[seg.start_s < 30]  # three measured segments: no baseline yet
    assert not raised_voice(few.assign(pitch_hz=few.pitch_hz * 2)).any()
    unmeasured = seg.assign(pitch_hz=np.where(seg.start_s == 45, np.nan, seg.pitch_hz))
    assert not raised_voice(unmeasured).any()  # unvoiced: never raised


def test_raised_voice_alerts_on_a_stored_session_and_on_the_live_stream_alike():
    seg = voices([100, 102, 98, 100, 125, 126, 100], [-30, -30, -31, -29, -22, -21, -30])
    a = analyze("s1", seg, channels(("agent", ()), ("customer", ())), 80.0, RULES)
    hit = a.alerts[a.alerts.rule == "raised_voice"]
    assert hit.t_s.tolist() == [45.0] and hit.speaker.tolist() == ["customer"]
    assert "raised voice in 2 segment(s) from 45.0 s to 59.0 s" in hit.detail.iloc[0]
    assert hit.emotion.tolist() == ["angry"]
    live = judge_live("live-1", seg, 80.0, RULES)
    assert [(x["rule"], x["t_s"]) for x in live if x["rule"] == "raised_voice"] == \
        [("raised_voice", 45.0)]
    # the threshold is the rules file's: a stricter one, no alert
    stricter = dataclasses.replace(RULES, alerts=tuple(
        dataclasses.replace(r, loudness_db=10.0) if r.kind == "raised_voice" else r
        for r in RULES.alerts))
    assert "raised_voice" not in set(analyze("s1", seg, None, 80.0, stricter).alerts.rule)


@pytest.fixture(scope="module")
def rising() -> np.ndarray:
    """Four calm, low utterances, then a loud, high one, with pauses."""
    from tests.audio_gen import silence, speak
    calm = [speak(t, pitch=40, amplitude=60) for t in
            ("I would like to ask about my bill.", "It came yesterday.",
             "There is a charge on it.", "What is it for?")]
    loud = speak("This is not acceptable!", pitch=95, amplitude=200)
    return np.concatenate([y for u in [*calm, loud] for y in (u, silence(0.7))])


def test_stored_prosody_judges_alerts_again_and_the_timeline_draws_it_under_the_emotions(
        tmp_path):
    """A session saved with the analyser's columns (through a shard): read back in scope, its
    raised_voice alert judged again from the stored rows (the what-if view), its exports, and
    its curves under the emotions."""
    from core.guard.access import operator
    from core.storage.queries import Reader
    from core.storage.store import Store
    from dashboard.components import charts
    from tests.store_fixtures import writer_for
    from tests.test_store import make_result

    r = make_result(n_segments=6)
    pitch, level = [100, 101, 99, 100, 100, 130], [-30, -30, -29, -31, -30, -20]
    segs = tuple(dataclasses.replace(x, speaker="customer", values={
        "pitch_hz": p, "loudness_dbfs": db, "rate_wps": 2.5,
        "pitch_curve": [p, 0.0, p], "loudness_curve": [db, db - 30, db]})
        for x, p, db in zip(r.segments, pitch, level))
    r = dataclasses.replace(r, segments=segs, duration_s=12.0, channels=(
        dataclasses.replace(r.channels[0], speaker="customer"),))
    # through a Ray shard first (Parquet), as `ingest --executor ray` then `emoscope import`
    from core.intake.shards import open_folder, read_heads, read_whole, write_shard
    write_shard(tmp_path / "shards", "k1", r, {})
    fs, root = open_folder(tmp_path / "shards")
    r = read_whole(fs, root, read_heads(fs, root, ["k1"])[0])
    writer = writer_for(tmp_path / "e.duckdb")
    writer.store.migrate()
    writer.save(r, None)
    reader = Reader(Store(tmp_path / "e.duckdb"), operator())
    seg = reader.segments(r.session_id)
    assert seg.pitch_hz.tolist() == pitch and seg.rate_wps.tolist() == [2.5] * 6
    assert list(seg.pitch_curve.iloc[5]) == [130.0, 0.0, 130.0]
    stored = reader.alerts()
    assert stored[stored.rule == "raised_voice"].t_s.tolist() == [10.0]
    judged = rejudged.judged_alerts(reader, RULES)
    assert judged[judged.rule == "raised_voice"].t_s.tolist() == [10.0]
    # exports: the CSV one value a cell (no curves), the Parquet lossless
    import io

    from core.reporting import reports
    from core.storage.queries import SessionFilter
    out = reader.export_segments(SessionFilter.of(r.session_id))
    csv = pd.read_csv(io.BytesIO(reports.to_csv(out)))
    assert csv.pitch_hz.tolist() == pitch and "pitch_curve" not in csv
    back = pd.read_parquet(io.BytesIO(reports.to_parquet(out)))
    assert list(back.loudness_curve.iloc[5]) == [-20.0, -50.0, -20.0]
    fig = charts.timeline(reader.frames(r.session_id), seg, duration_s=12.0)
    pitch_line = [t for t in fig.data if t.name == "pitch (Hz)"]
    assert len(pitch_line) == 1
    y = np.asarray(pitch_line[0].y, float)
    assert np.nanmax(y) == 130.0 and np.isnan(y).any()  # unvoiced 0 Hz is a gap
    # a session measured without prosody: no voice lane, nothing broken
    unmeasured = seg.assign(pitch_curve=pd.NA, loudness_curve=pd.NA)
    assert not [t for t in charts.timeline(reader.frames(r.session_id), unmeasured).data
                if t.name == "pitch (Hz)"]
    # the voice lane is the second row, under the emotions, on the same x axis
    emotions = [t for t in fig.data if t.name == "angry"]
    assert pitch_line[0].xaxis == "x2" and emotions[0].xaxis == "x"
    assert "x" in (fig.layout.xaxis2.matches, fig.layout.xaxis.matches) or \
        fig.layout.xaxis.matches == "x2"


def test_raised_voice_fires_on_the_live_stream_as_the_utterance_closes(model, rising, tmp_path,
                                                                      monkeypatch):
    """The analyser on the live stream: each closed utterance measured as it closes, the rule
    firing before the stream ends, and the final assembly carrying the segments' values."""
    monkeypatch.setenv("EMOSCOPE_PROSODY", "on")  # tests/conftest.py turns it off elsewhere
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from tests.serving import LOCAL, WS_LOCAL
    from tests.test_stream import replay

    rules = tmp_path / "emoscope.toml"
    rules.write_text('[[alerts]]\nrule = "raised"\nkind = "raised_voice"\nmin_count = 1\n'
                     'pitch_semitones = 3.0\nloudness_db = 6.0\nseverity = "high"\n')
    # a longer pause at the end: the last utterance closes while the stream is still live
    pcm = (np.clip(np.concatenate([rising, np.zeros(2 * SR, np.float32)]), -1, 1) * 32767
           ).astype("<i2")
    with TestClient(create_app(Settings(model="tiny-random", device="cpu", tick_s=0.05,
                                        rules=str(rules))),
                    client=("127.0.0.1", 40005), base_url=LOCAL) as c, \
            c.websocket_connect(f"{WS_LOCAL}/v1/stream?role=customer") as ws:
        ws.receive_json()
        msgs, _ = replay(ws, [pcm[i:i + 8000].tobytes() for i in range(0, pcm.size, 8000)],
                         pace_s=0.05)
    live = [(m["seq"], a) for m in msgs if m["type"] == "update" for a in m["alerts"]]
    assert [a["rule"] for _, a in live] == ["raised"]
    assert "raised voice in 1 segment(s)" in live[0][1]["detail"]
    final = msgs[-1]
    assert [a["rule"] for a in final["alerts"]] == ["raised"]  # and over the whole session
    said = final["utterances"]
    assert len(said) == 5 and said[-1]["pitch_hz"] > 1.3 * max(u["pitch_hz"] for u in said[:4])
