"""Speech-to-text backends: pocketsphinx for real on flite speech, SenseVoice through FunASR's
own loading path with a tiny random checkpoint, and a clear line when a backend cannot load."""
import numpy as np
import pytest

from ingest import speech_to_text as stt
from tests.audio_gen import flite

SCRIPT = "i want to cancel my account right now"


@pytest.fixture(scope="module")
def sphinx():
    return stt.load("pocketsphinx")


def test_pocketsphinx_hears_flite_word_for_word(sphinx):
    wave = flite(SCRIPT + ".", "slt")
    pieces = [(1, "customer", 2.0, 2.0 + wave.size / 16000, wave)]
    utts, events = stt.utterances(sphinx, "s1", pieces)
    (u,) = utts
    assert u.utterance_id == "s1-c1-u00000" and u.speaker == "customer" and events == ()
    assert stt.word_error_rate(SCRIPT, u.text) <= 0.1, u.text
    assert u.asr_model == "pocketsphinx:en-us" and u.language == "en" and 0 < u.confidence <= 1
    # word times are session seconds, in order, inside the piece
    assert [w.word for w in u.words] == u.text.split()
    starts = [w.start_s for w in u.words]
    assert starts == sorted(starts) and 2.0 <= starts[0] and u.words[-1].end_s <= u.end_s + 0.05


def test_word_error_rate():
    assert stt.word_error_rate("It's the third time.", "its the third time") == 0.25
    assert stt.word_error_rate("a b c d", "a x c d e") == 0.5
    assert stt.word_error_rate("a b", "a b") == 0.0


def test_digital_silence_is_not_transcribed(sphinx):
    utts, _ = stt.utterances(sphinx, "s1", [(0, "agent", 0.0, 1.0, np.zeros(16000, np.float32))])
    assert utts == ()


def test_sensevoice_tiny_loads_through_funasr_and_parses_its_tags():
    sv = stt.load("sensevoice-tiny")
    assert sv.name == "sensevoice:tiny-random"
    wave = flite("thank you for calling", "rms")
    heard = sv.transcribe([wave, wave[:8000]])
    assert len(heard) == 2 and all("<|" not in h.text for h in heard)
    # a random checkpoint says random things, but the same thing alone or beside another piece
    assert sv.transcribe([wave[:8000]])[0].text == heard[1].text
    h = stt.parse_sensevoice("<|en|><|ANGRY|><|Laughter|><|woitn|>i want a refund")
    assert (h.text, h.language, h.emotion, h.events) == ("i want a refund", "en", "angry",
                                                         ("laughter",))


def test_a_backend_that_cannot_load_says_why_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("EMOSCOPE_SENSEVOICE", raising=False)
    for spec, says in (("sensevoice", "not on this machine"), ("nonsense", "unknown"),
                       (f"sensevoice:{tmp_path / 'nope'}", "not a directory"),
                       # faster-whisper is an optional extra, and no Whisper weights are here
                       (f"whisper:{tmp_path / 'nope'}", "whisper")):
        with pytest.raises(stt.AsrUnavailable) as e:
            stt.load(spec)
        assert says in str(e.value) and "\n" not in str(e.value)
    assert stt.resolve("auto") == "pocketsphinx"  # no SenseVoice weights here
    assert stt.load("none") is None
