"""`emoscope ingest --asr pocketsphinx` on a short two-channel flite call: the stored
utterances say what the script says, per speaker, with word times, and the run records its
speech-to-text backend."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.storage.store import Store
from ingest.speech_to_text import word_error_rate
from tests.audio_gen import flite, write
from tests.serving import LOCAL, WS_LOCAL

# (channel, flite voice, line): the 16 kHz voices slt, rms and awb
SCRIPT = [(0, "rms", "Good morning, how can I help you today?"),
          (1, "slt", "I want to cancel my account right now."),
          (0, "awb", "I am sorry to hear that. Let me check your account.")]


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    chans = [[], []]
    for ch, voice, text in SCRIPT:
        w = flite(text, voice)
        for c in (0, 1):
            chans[c] += [w if c == ch else np.zeros_like(w), np.zeros(8000, np.float32)]
    x = np.stack([np.concatenate(c) for c in chans]) * 0.7
    return write(tmp_path_factory.mktemp("asr") / "call.wav", x)


def test_ingest_with_pocketsphinx_stores_what_was_said(call, tmp_path, model):
    db = tmp_path / "db.duckdb"
    res = CliRunner().invoke(app, ["ingest", str(call), "--db", str(db), "--model", "tiny-random",
                                   "--asr", "pocketsphinx", "--executor", "serial"])
    assert res.exit_code == 0, res.output
    r = Reader(Store(db), operator())
    sid = r.session_rows().session_id.iloc[0]
    lines = r.transcript(sid)
    assert lines.speaker.tolist() == ["agent", "customer", "agent"]
    for ch in (0, 1):
        said = " ".join(lines[lines.channel == ch].text)
        meant = " ".join(t for c, _, t in SCRIPT if c == ch)
        assert word_error_rate(meant, said) <= 0.10, (meant, said)
    assert lines.label.notna().all()  # each line with the emotion of its segment
    words = r.words(SessionFilter.of(sid))
    for u in lines.itertuples():
        w = words[words.utterance_id == u.utterance_id]
        assert " ".join(w.word) == u.text
        assert (w.start_s >= u.start_s - 1e-6).all() and (w.end_s <= u.end_s + 0.05).all()
    assert r.runs().asr.tolist() == ["pocketsphinx:en-us"]


def test_a_backend_that_cannot_load_stops_the_ingest_in_one_line(call, tmp_path):
    res = CliRunner().invoke(app, ["ingest", str(call), "--db", str(tmp_path / "d.duckdb"),
                                   "--model", "tiny-random", "--asr", "whisper:/nowhere"])
    assert res.exit_code == 2 and "--asr whisper:/nowhere" in res.output
    assert not (tmp_path / "d.duckdb").exists()


@pytest.fixture(scope="module")
def asr_client(model):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    settings = Settings(model="tiny-random", device="cpu", asr="pocketsphinx")
    with TestClient(create_app(settings), client=("127.0.0.1", 40002), base_url=LOCAL) as c:
        yield c


def test_predict_with_asr_says_what_was_said(asr_client, tmp_path):
    clip = write(tmp_path / "c.wav", flite(SCRIPT[1][2], "slt"))
    with open(clip, "rb") as f:
        got = asr_client.post("/v1/predict", params={"asr": "true"},
                              files={"audio": ("c.wav", f, "audio/wav")})
    assert got.status_code == 200, got.text
    a = got.json()
    assert word_error_rate(SCRIPT[1][2], a["text"]) <= 0.10, a["text"]
    assert a["asr_model"] == "pocketsphinx:en-us" and [w["word"] for w in a["words"]] == \
        a["text"].split()
    with open(clip, "rb") as f:
        plain = asr_client.post("/v1/predict", files={"audio": ("c.wav", f, "audio/wav")})
    assert "text" not in plain.json()


def test_the_live_stream_sends_the_text_of_each_finished_utterance(asr_client):
    import json as _json
    x = np.concatenate([flite("I want to cancel my account right now.", "slt"),
                        np.zeros(16000, np.float32),
                        flite("This is the third time I am calling.", "slt"),
                        np.zeros(8000, np.float32)])
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    with asr_client.websocket_connect(f"{WS_LOCAL}/v1/stream?role=customer") as ws:
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, pcm.size, 16000):
            ws.send_bytes(pcm[i:i + 16000].tobytes())
        ws.send_text(_json.dumps({"type": "end"}))
        msgs = []
        while not msgs or msgs[-1]["type"] not in ("final", "error"):
            msgs.append(ws.receive_json())
    final = msgs[-1]
    said = " ".join(u["text"] for u in final["utterances"])
    assert word_error_rate("i want to cancel my account right now this is the third time i "
                           "am calling", said) <= 0.10, said
    live = [u for m in msgs if m["type"] == "update" for u in m["channels"][0]["utterances"]]
    assert all("text" in u for u in live)
