"""Redaction (core/text/redaction.py) on hostile transcripts, and a spoken card number carried by a
real ingest that never reaches the store, the word index, search or the API."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.storage import analysers
from core.index import word_index
from core.media.audio import decode
from core.index import word_search as ws
from core.guard.access import operator
from core.storage.queries import Reader
from core.text.redaction import RedactionConfig, luhn, redact_pieces, redact_result, redact_text
from core.storage.store import Store
from core.base.types import SessionMeta, SessionResult, Utterance, Word, utterance_id_for
from tests.audio_gen import silence
from tests.serving import LOCAL
from tests.store_fixtures import writer_for

ON = RedactionConfig()
CARD = "4111 1111 1111 1111"  # a test Visa number: passes Luhn


@pytest.mark.parametrize("said, expected", [
    (f"my card is {CARD} thanks", "my card is [card] thanks"),
    ("card 4111-1111-1111-1111 expires", "card [card] expires"),
    ("it is 5500 0000 0000 0004", "it is [card]"),
    ("four one one one one one one one one one one one one one one one",  "[card]"),
    ("Four One One One-one one one one one one one one one one one one", "[card]"),
    ("我的卡号是四一一一一一一一一一一一一一一一", "我的卡号是[card]"),
    ("电话 一三八 一二三四 五六七八 谢谢", "电话 [phone] 谢谢"),
    ("call +44 20 7946 0958 now", "call [phone] now"),
    ("oh seven seven zero zero nine zero, double", "[phone], double"),
    ("the pin is one two three four", "the pin is [number]"),
    ("4111 1111 1111 1112 is not a card", "[number] is not a card"),  # fails Luhn
    ("write to Jo.B+x@example.co.uk or jo dot b at example dot com",
     "write to [email] or [email]"),
    # what stays: years, amounts, one spoken digit, counting words in Chinese
    ("in 2024 I paid 500 dollars, one time", "in 2024 I paid 500 dollars, one time"),
    ("我一个人在家", "我一个人在家"),
])
def test_hostile_transcripts(said, expected):
    assert redact_text(said, ON) == expected
    assert redact_text(expected, ON) == expected  # twice changes nothing


def test_luhn_and_configured_terms_and_off():
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    cfg = RedactionConfig(terms=("platinum plus", "蓝卡"))
    assert redact_text("I want PLATINUM  plus, not platinumplus; 我要蓝卡", cfg) == \
        "I want [term], not platinumplus; 我要[term]"
    assert redact_text(CARD, RedactionConfig(enabled=False)) == CARD
    with pytest.raises(ValueError, match="keep_raw must be true or false"):
        RedactionConfig.from_toml({"keep_raw": "yes"})
    with pytest.raises(ValueError, match="raw_roles must be a list of roles"):
        RedactionConfig.from_toml({"keep_raw": True, "raw_roles": ["everyone"]})
    kept = RedactionConfig.from_toml({"keep_raw": True, "raw_roles": ["supervisor"]})
    assert kept.shows_raw({"supervisor"}) and not kept.shows_raw({"admin"})
    assert not RedactionConfig().shows_raw({"admin"})  # off unless asked for


def test_digits_split_across_one_speakers_utterances_and_words():
    """A card read in three breaths, the agent speaking between them: each piece of each
    utterance of the customer goes, in the text and in the words; the agent's are kept."""
    def u(ch, n, t0, text):
        return Utterance(utterance_id_for("s", ch, n), ch, "customer" if ch else "agent",
                         t0, t0 + 1, text, "en",
                         words=tuple(Word(w, t0 + i * .1, t0 + i * .1 + .1)
                                     for i, w in enumerate(text.split())))
    r = SessionResult("s", "x.wav", "x.wav", "0", 10.0, 2, SessionMeta(), utterances=(
        u(1, 0, 0.0, "it is four one one one"),
        u(0, 0, 1.5, "go on 12 times"),
        u(1, 1, 3.0, "one one one one"),
        u(1, 2, 5.0, "1111-1111 thank you")))
    out = {x.utterance_id: x for x in redact_result(r, ON).utterances}
    assert [out[utterance_id_for("s", 1, n)].text for n in range(3)] == \
        ["it is [card]", "[card]", "[card] thank you"]
    assert out[utterance_id_for("s", 0, 0)].text == "go on 12 times"
    words = [w.word for n in range(3) for w in out[utterance_id_for("s", 1, n)].words]
    assert words == ["it", "is"] + ["[card]"] * 9 + ["thank", "you"]
    assert not any(c.isdigit() for w in words for c in w)
    assert redact_pieces(["4111 1111", "1111 1111"], ON) == ["[card]", "[card]"]


def test_a_spoken_card_never_reaches_the_store_the_index_search_or_the_api(model, speech,
                                                                          tmp_path):
    """A speech-to-text analyser that "hears" a card number read out over two segments:
    ingest stores only placeholders, in utterances and words, so the word index, a search
    and GET /v1/sessions/{id} never see a digit of it."""
    from api.app import create_app
    from api.settings import Settings
    from core.storage.analysers import Analyser, Found
    from ingest.options import IngestOptions
    from ingest.pipeline import process_file
    from tests.audio_gen import write

    heard = ["my card is four one one one one one one one", "one one one one 1111 ok"]

    class Hears(Analyser):
        name = "hears"

        def analyse(self, spans):
            return [Found(more="") for _ in spans]

        @classmethod
        def finish(cls, result, answers):
            said = tuple(
                Utterance(utterance_id_for(result.session_id, seg.channel, n), seg.channel,
                          seg.speaker, seg.start_s, seg.end_s, text, "en", 1.0, "hears",
                          words=tuple(Word(w, seg.start_s, seg.end_s) for w in text.split()))
                for n, ((seg, _), text) in enumerate(zip(answers, heard + ["fine"] * 99)))
            return replace(result, utterances=said)

    analysers.register_analyser(Hears)
    db = tmp_path / "r.duckdb"
    try:
        path = write(tmp_path / "a.wav", np.concatenate(
            [speech * 0.5, silence(0.6), speech * 0.5, silence(0.3)]))
        result = process_file(path, SessionMeta(), model, IngestOptions()).result
        writer = writer_for(db)
        writer.store.migrate()
        writer.save(result, None)
    finally:
        analysers.unregister("hears")
    assert len(result.utterances) >= 2
    store = Store(db)
    reader = Reader(store, operator())
    texts = list(reader.utterances().text)
    words = list(reader.words().word)
    assert texts[:2] == ["my card is [card]", "[card] ok"] and "[card]" in words
    for said in texts + words:
        assert not any(c.isdigit() for c in said) and "one" not in said.split()
    # the word index beside the store holds none of it, so no search can find it
    word_index.sync(store)
    raw = b"".join(p.read_bytes() for p in word_index.folder_of(db).rglob("*") if p.is_file())
    assert b"four" not in raw and b"1111" not in raw and b"card" in raw
    for q in ("four", "1111", "one"):
        assert ws.search(reader, q, ws.Filters()).hits.empty
    with TestClient(create_app(Settings(db=db, model="tiny-random", device="cpu")),
                    client=("127.0.0.1", 40004), base_url=LOCAL) as c:
        body = c.get(f"/v1/sessions/{result.session_id}").text
        assert "four one" not in body and "one one" not in body and "1111 ok" not in body
        found = c.get("/v1/search", params={"q": "card"}).json()
        assert json.dumps(found).count("[card]") >= 1
        assert c.get("/v1/search", params={"q": "1111"}).json()["hits"] == []
    # ... and exported audio can say none of it either: --bleep puts a tone over the redacted
    # words' times (here each word has its segment's times), the rest is the recording.
    import io
    import wave
    import zipfile

    from typer.testing import CliRunner

    from cli.main import app
    from core.reporting import clips
    res = CliRunner().invoke(app, ["export", "--db", str(db), "--out", str(tmp_path / "x"),
                                   "--format", "csv", "--bleep"])
    assert res.exit_code == 0, res.output
    (zipped,) = (tmp_path / "x").glob("*_clips-bleeped.zip")
    with zipfile.ZipFile(zipped) as z, wave.open(io.BytesIO(z.read(
            f"{result.session_id}.wav"))) as w:
        got = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767
    original = decode(path).samples[0]
    spans = clips.redacted_spans(reader, result.session_id)
    said = [u for u in result.utterances[:2]]
    assert {(s, e) for _, s, e in spans} == {(u.start_s, u.end_s) for u in said}
    inside = np.zeros(got.size, bool)
    for _, s, e in spans:
        inside[int(s * 16000):int(np.ceil(e * 16000))] = True
    t = np.flatnonzero(inside)
    tone = clips.TONE_LEVEL * np.sin(2 * np.pi * clips.TONE_HZ * t / 16000)
    assert np.abs(got[inside] - tone).max() < 1e-3
    assert np.abs(got[~inside] - np.clip(original[~inside], -1, 1)).max() < 1e-3


# -- what leaves the server without being stored: /v1/predict?asr=true and the live stream ----
HEARD = ["my card is four one one one one one one one", "one one one one 1111 ok"]


class Teller:
    """A speech-to-text backend that hears a card number read out over two pieces."""
    name = "teller"

    def __init__(self):
        self.n = 0

    def transcribe(self, waves):
        from ingest.speech_to_text import Heard
        out = []
        for _ in waves:
            text = HEARD[self.n % 2]
            self.n += 1
            out.append(Heard(text, "en", 1.0, words=tuple(Word(w, 0.0, 0.1)
                                                           for w in text.split())))
        return out


def teller_client(model, tmp_path, monkeypatch, toml: str = ""):
    """A loopback (admin) client of an app whose speech-to-text hears HEARD."""
    from api.app import create_app
    from api.batcher import Batcher
    from api.runtime import Runtime, engine_run
    from api.settings import Settings
    from core.analysis.rules import load_rules
    from ingest.options import IngestOptions
    (tmp_path / "emoscope.toml").write_text(toml)
    monkeypatch.setenv("EMOSCOPE_CONFIG", str(tmp_path / "emoscope.toml"))
    settings = Settings(model="tiny-random", device="cpu", db=tmp_path / "e.duckdb",
                        volatility_reference={"customer": (0.0,) * 20})
    rt = Runtime(settings, model, load_rules(), IngestOptions(),
                 Batcher(engine_run(model, None), batch_seconds=30, max_wait_ms=0,
                         max_queue=8, timeout_s=30), transcriber=Teller())
    return TestClient(create_app(settings, runtime=rt), client=("127.0.0.1", 40005),
                      base_url=LOCAL)


def no_card(texts) -> None:
    for t in texts:
        assert "four one" not in t and "one one" not in t and "1111" not in t, t


def test_predict_with_asr_answers_redacted_text_raw_only_for_allowed_roles(
        model, speech, tmp_path, monkeypatch):
    from tests.audio_gen import write
    clip = write(tmp_path / "c.wav", speech[:16000 * 3]).read_bytes()

    def ask(c):
        r = c.post("/v1/predict", params={"asr": "true"},
                   files={"audio": ("c.wav", clip, "audio/wav")})
        assert r.status_code == 200, r.text
        return r.json()

    with teller_client(model, tmp_path, monkeypatch) as c:
        a = ask(c)
    assert a["text"] == "my card is [phone]" and "text_raw" not in a
    no_card([a["text"], *(w["word"] for w in a["words"])])
    assert "[phone]" in [w["word"] for w in a["words"]]
    # keep_raw for admins: this loopback operator (an admin) sees the raw text beside it
    (tmp_path / "a").mkdir()
    with teller_client(model, tmp_path / "a", monkeypatch,
                       "[redaction]\nkeep_raw = true\nraw_roles = [\"admin\"]\n") as c:
        a = ask(c)
    assert a["text"] == "my card is [phone]" and a["text_raw"] == HEARD[0]
    (tmp_path / "k").mkdir()
    with teller_client(model, tmp_path / "k", monkeypatch,
                       "[redaction]\nkeep_raw = true\nraw_roles = [\"analyst\"]\n") as c:
        assert "text_raw" not in ask(c)


def test_live_stream_text_is_redacted_across_a_speakers_utterances(model, speech, tmp_path,
                                                                   monkeypatch):
    """A card read in two breaths: each utterance's text in the updates and in "final" is
    redacted with the speaker's earlier ones, so no piece of the number leaves."""
    pcm = (np.clip(np.concatenate([speech, silence(1.2), speech, silence(1.2)]), -1, 1)
           * 32767).astype("<i2")
    texts, final = [], None
    with teller_client(model, tmp_path, monkeypatch) as c:
        with c.websocket_connect("ws://localhost/v1/stream?role=customer") as ws:
            ws.receive_json()
            for i in range(0, pcm.size, 16000):
                ws.send_bytes(pcm[i:i + 16000].tobytes())
            ws.send_text('{"type": "end"}')
            while (m := ws.receive_json())["type"] != "final":
                if m["type"] == "update":
                    texts += [u["text"] for ch in m["channels"] for u in ch["utterances"]
                              if "text" in u]
            final = m
    said = [u["text"] for u in final["utterances"] if "text" in u]
    assert len(said) >= 2 and said[:2] == ["my card is [card]", "[card] ok"], said
    no_card(texts + said)
    assert all("text_raw" not in u for u in final["utterances"])
