import numpy as np
import pytest

from core.media.audio import SAMPLE_RATE, AudioError, decode, default_roles
from core.analysis.quality import measure
from tests.audio_gen import FORMATS, write


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_decodes_to_16k_float(tmp_path, speech, fmt):
    path = write(tmp_path / f"clip.{fmt}", speech, fmt)
    d = decode(path)
    assert d.samples.dtype == np.float32 and d.n_channels == 1
    assert abs(d.duration_s - speech.size / SAMPLE_RATE) < 0.15, d.duration_s
    # Same speech comes back: correlation with the original survives every codec.
    n = min(speech.size, d.samples.shape[1]) - 4000
    lag = int(np.argmax(np.correlate(d.samples[0, 2000:6000], speech[2000:6000], "full"))) - 3999
    a = d.samples[0, max(0, lag):n + max(0, lag)]
    b = speech[max(0, -lag):n + max(0, -lag)]
    assert np.corrcoef(a[: min(a.size, b.size)], b[: min(a.size, b.size)])[0, 1] > 0.8


def test_stereo_channels_stay_apart(tmp_path, call_audio):
    d = decode(write(tmp_path / "call.flac", call_audio, "flac"))
    assert d.n_channels == 2
    # The agent talks while the customer is silent and the other way round.
    n = d.samples.shape[1] // 1600 * 1600
    energy = np.square(d.samples[:, :n]).reshape(2, -1, 1600).mean(axis=2)
    left_only = (energy[0] > 1e-4) & (energy[1] < 1e-6)
    right_only = (energy[1] > 1e-4) & (energy[0] < 1e-6)
    assert left_only.sum() > 10 and right_only.sum() > 10


def test_roles_by_channel_count():
    assert default_roles(1) == ("speaker",)
    assert default_roles(2) == ("agent", "customer")
    assert default_roles(3) == ("speaker1", "speaker2", "speaker3")


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is a text file, not audio\n" * 20, "not a recognised audio file"),
    (np.random.default_rng(0).bytes(50_000), "not a recognised audio file"),
])
def test_broken_inputs_raise_a_reason(tmp_path, content, reason):
    p = tmp_path / "broken.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        decode(p)


def test_quality_flags():
    quiet = np.full(SAMPLE_RATE, 0.001, np.float32)
    assert measure(quiet, SAMPLE_RATE)[2] == ("too_quiet",)
    loud = np.sign(np.sin(np.linspace(0, 400, SAMPLE_RATE))).astype(np.float32)
    assert "clipped" in measure(loud, SAMPLE_RATE)[2]
    short = np.full(SAMPLE_RATE // 4, 0.1, np.float32)
    assert measure(short, SAMPLE_RATE)[2] == ("too_short",)
