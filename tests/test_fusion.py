"""Voice and words together (core/analysis/fusion): the table of fused states, per utterance and per
turn; on flite speech heard by pocketsphinx, polite words in an angry voice (the emotion
model's output stubbed: the test weights are random) are stored as masked frustration, pick
that state's reply, and follow a threshold change through `recompute` with no model; the same
in /v1/predict and the live stream."""
from __future__ import annotations

import asyncio
import numpy as np
import pandas as pd
import pytest

from core.storage import analysers
from core.analysis import fusion
from core.guard.access import operator
from core.storage.derived import recompute
from core.storage.queries import Reader
from core.analysis.rules import RulesError, load_rules
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import ChannelQuality, Segment, SessionMeta, SessionResult
from tests.analytics_fixtures import onehot
from tests.test_store import RULES

THANKS = "Thank you so much, this is just great."


def test_every_cell_of_the_table():
    voices = ("angry", "disgusted", "sad", "neutral", "happy", None)
    got = {w: [fusion.fuse(w, v, RULES) for v in voices] for w in (0.8, 0.0, -0.8, None)}
    assert got == {
        0.8: ["masked_frustration", "masked_frustration", "mixed", "positive", "positive",
              "positive"],
        0.0: ["negative", "negative", "negative", "neutral", "positive", "neutral"],
        -0.8: ["negative", "negative", "negative", "suppressed_distress", "mixed", "negative"],
        None: ["negative", "negative", "negative", "neutral", "positive", "unclear"]}
    # the thresholds are the rules': at exactly positive_words the words are positive
    assert fusion.fuse(RULES.fusion_positive_words, "angry", RULES) == "masked_frustration"
    assert fusion.fuse(RULES.fusion_positive_words - 0.01, "angry", RULES) == "negative"
    # a voice under voice_confidence is not read
    assert fusion.voice_label(onehot("angry", 0.3), RULES) is None
    assert fusion.voice_label(onehot("angry", 0.5), RULES) == "angry"


def test_a_turn_is_fused_over_its_utterances_and_the_voice_over_the_overlap():
    seg = pd.DataFrame({"channel": [1, 1, 0], "start_s": [0.0, 2.0, 4.0],
                        "end_s": [2.0, 4.0, 5.0],
                        "scores": [onehot("neutral"), onehot("angry"), onehot("happy")]})
    utts = pd.DataFrame({
        "utterance_id": ["u0", "u1", "u2"], "channel": [1, 1, 0],
        "speaker": ["customer", "customer", "agent"], "start_s": [0.0, 2.5, 4.0],
        "end_s": [2.0, 4.0, 5.0], "sentiment": [-0.6, 0.7, np.nan]})
    out = fusion.session_fusion(utts, seg, RULES).set_index("utterance_id")
    assert out.fused.to_dict() == {"u0": "suppressed_distress", "u1": "masked_frustration",
                                   "u2": "positive"}
    assert out.voice.to_dict() == {"u0": "neutral", "u1": "angry", "u2": "happy"}
    assert out.turn.tolist() == [0, 0, 1]
    # the customer's turn: words (-0.6*2 + 0.7*1.5)/3.5 = -0.04, neutral; voice half neutral,
    # half angry (0.45 each: neither read) → neutral; the agent's turn is its one line
    assert out.turn_fused.tolist() == ["neutral", "neutral", "positive"]


def test_fusion_thresholds_are_checked(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text("[fusion]\npositive_words = -0.5\nnegative_words = 0.5\n")
    with pytest.raises(RulesError, match=r"\[fusion\]"):
        load_rules(f)


@pytest.fixture(scope="session")
def thanks_heard():
    """THANKS in flite's slt voice as pocketsphinx hears it (decoded once per test run)."""
    from ingest import speech_to_text as stt
    from tests.audio_gen import flite
    wave = flite(THANKS, "slt")
    return wave, stt.transcribe(stt.load("pocketsphinx"), [wave])[0]


def angry_call(heard) -> SessionResult:
    """One customer line over one angry segment (the emotion model's output stubbed), made
    into a session the way every assembly path makes one (core.storage.analysers.finish: redaction,
    then sentiment)."""
    from ingest.speech_to_text import said
    sha = "fa" * 32
    sid = "s" + sha[:15]
    seg = Segment(f"{sid}-c0-00000", 0, "customer", 0.2, 2.6, "angry", 0.8,
                  np.array(onehot("angry", 0.8), np.float32), np.ones(4, np.float32), 0.1, 0.0,
                  (), None)
    utts, _ = said(sid, [(0, "customer", 0.2, 2.6, heard, "pocketsphinx:en-us")])
    r = SessionResult(sid, "/x/thanks.wav", "thanks.wav", sha, 3.0, 1,
                      SessionMeta(recorded_at="2026-11-02"),
                      (ChannelQuality(0, "customer", 3.0, 0.1, 0.0, 2.4, ()),), (seg,),
                      utterances=utts)
    return analysers.finish(r, [])


def test_polite_words_in_an_angry_voice_are_masked_frustration_stored_and_recomputed(
        thanks_heard, tmp_path):
    _, heard = thanks_heard
    assert "thank you" in heard.text and "great" in heard.text, heard.text
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    SessionWriter(store, RULES).save(angry_call(heard), None)
    line = Reader(store, operator()).transcript("s" + "fa" * 7 + "f").iloc[0]
    assert line.sentiment >= RULES.fusion_positive_words and line.voice == "angry"
    assert (line.fused, line.turn, line.turn_fused) == ("masked_frustration", 0,
                                                         "masked_frustration")
    assert RULES.fused_response(line.fused, line.label) == \
        RULES.responses_en["masked_frustration"] != RULES.response("angry")

    # Words must now be very positive to count as positive: recompute, no model, says so.
    stricter = tmp_path / "emoscope.toml"
    stricter.write_text("[fusion]\npositive_words = 0.99\n")
    recompute(store, load_rules(stricter))
    assert store.query("SELECT fused, turn_fused FROM utterances").values.tolist() == \
        [["negative", "negative"]]


def test_predict_and_the_live_stream_fuse_the_words_with_the_voice(thanks_heard, model,
                                                                    monkeypatch, tmp_path):
    """/v1/predict?asr=true and a live utterance: the same clip, the same angry output."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.live import LiveStream
    from api.settings import Settings
    from ingest.model import Output
    from ingest.options import IngestOptions
    from tests.audio_gen import write
    from tests.serving import LOCAL
    wave, heard = thanks_heard
    angry = np.array(onehot("angry", 0.8), np.float32)

    class Heard:  # the backend's answer for this clip (it was decoded once, above)
        name = "pocketsphinx:en-us"

        def transcribe(self, waves):
            return [heard for _ in waves]

    async def submit(waves):
        return [Output(np.zeros((3, 9), np.float32), angry, np.ones(4, np.float32))
                for _ in waves]

    settings = Settings(model="tiny-random", device="cpu")
    clip = write(tmp_path / "thanks.wav", wave)
    with TestClient(create_app(settings), client=("127.0.0.1", 40003), base_url=LOCAL) as c:
        rt = c.app.state.runtime
        monkeypatch.setattr(rt, "transcriber", Heard())
        monkeypatch.setattr(rt.batcher, "submit", submit)
        with open(clip, "rb") as f:
            got = c.post("/v1/predict", params={"asr": "true", "lang": "zh"},
                         files={"audio": ("thanks.wav", f, "audio/wav")})
    assert got.status_code == 200, got.text
    a = got.json()
    assert (a["emotion"], a["fused"]) == ("angry", "masked_frustration")
    assert a["sentiment"] > 0.3 and a["suggested_response"] == \
        RULES.responses_zh["masked_frustration"]

    live = LiveStream(("customer",), RULES, IngestOptions(), "en")
    ch = live.channels[0]
    span = (0.0, len(wave) / 16000)
    ch.outputs[span] = asyncio.run(submit([wave]))[0]
    ch.texts[span] = heard
    u = live._utterance(ch, span)
    assert (u["emotion"], u["fused"], u["text"]) == ("angry", "masked_frustration", heard.text)
    assert u["suggested_response"] == RULES.responses_en["masked_frustration"]

