"""Audio made on the fly for tests: espeak-ng and flite speech and any codec PyAV can write."""
from __future__ import annotations

import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SR = 16_000

# suffix → (container format, codec, sample format, sample rate)
FORMATS = {
    "pcm16.wav": ("wav", "pcm_s16le", "s16", 16000),
    "pcm24.wav": ("wav", "pcm_s24le", "s32", 44100),
    "pcm32.wav": ("wav", "pcm_s32le", "s32", 22050),
    "float.wav": ("wav", "pcm_f32le", "flt", 48000),
    "mulaw.wav": ("wav", "pcm_mulaw", "s16", 8000),
    "alaw.wav": ("wav", "pcm_alaw", "s16", 8000),
    "mp3": ("mp3", "libmp3lame", "fltp", 44100),
    "flac": ("flac", "flac", "s16", 16000),
    "vorbis.ogg": ("ogg", "libvorbis", "fltp", 44100),  # via the ffmpeg tool, see write()
    "opus.ogg": ("ogg", "libopus", "flt", 48000),
    "m4a": ("ipod", "aac", "fltp", 44100),
}


def speak(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160,
          amplitude: int = 100) -> np.ndarray:
    """espeak-ng speech as 16 kHz float32 mono."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed),
                        "-a", str(amplitude), "-w", str(out), text], check=True,
                       capture_output=True)
        with av.open(str(out)) as c:
            res = av.AudioResampler(format="flt", layout="mono", rate=SR)
            parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0)
                     for f in res.resample(fr)]
            parts += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def flite(text: str, voice: str = "slt") -> np.ndarray:
    """flite speech (slt, rms, awb: 16 kHz voices; kal: 8 kHz) as 16 kHz float32 mono:
    speech pocketsphinx recognises, so transcripts can be checked word for word."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True,
                       capture_output=True)
        return _read_mono(out)


def _read_mono(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=SR)
        parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0)
                 for f in res.resample(fr)]
        parts += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def write(path: Path, samples: np.ndarray, fmt: str = "pcm16.wav") -> Path:
    """Write (channels, n) or (n,) 16 kHz float audio to `path` in one of FORMATS."""
    container, codec, sample_fmt, rate = FORMATS[fmt]
    x = np.atleast_2d(samples).astype(np.float32)
    if codec == "libvorbis":  # PyAV's wheel lacks libvorbis; its native encoder is stereo-only
        wav = write(path.with_suffix(".tmp.wav"), x, "float.wav")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "libvorbis",
                        "-ar", str(rate), str(path)], check=True)
        wav.unlink()
        return path
    layout = {1: "mono", 2: "stereo"}.get(x.shape[0], f"{x.shape[0]}c")
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        stream.format = sample_fmt
        if x.shape[0] > 2:
            stream.codec_context.layout = layout
        res = av.AudioResampler(format=sample_fmt, layout=layout, rate=rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=layout)
        frame.sample_rate = SR
        frame.time_base = Fraction(1, SR)
        frame.pts = 0
        for f in res.resample(frame) + res.resample(None):
            for pkt in stream.encode(f):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


def copy_and_broken(folder: Path, original: str) -> None:
    """A second copy of `original` and the broken files every mixed folder holds: empty,
    text named as audio, and silence."""
    (folder / "diary-9-copy.wav").write_bytes((folder / original).read_bytes())
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.mp3").write_text("not audio\n" * 40)
    write(folder / "silent.wav", silence(2.0))


def conversation(agent_lines: list[str], customer_lines: list[str], gap_s: float = 0.6,
                 customer_voice: str = "en-us+f3") -> np.ndarray:
    """A stereo call: agent on channel 0, customer on channel 1, taking turns."""
    left, right = [], []
    for a, c in zip(agent_lines, customer_lines):
        sa = speak(a, "en-gb", pitch=40)
        sc = speak(c, customer_voice, pitch=70, speed=190, amplitude=150)
        left += [sa, silence(gap_s), np.zeros_like(sc), silence(gap_s)]
        right += [np.zeros_like(sa), silence(gap_s), sc, silence(gap_s)]
    return np.stack([np.concatenate(left), np.concatenate(right)])


def write_long(path: Path, seconds: int, burst: np.ndarray, every_min: int = 30) -> Path:
    """Mostly digital silence with a speech burst every `every_min` minutes, as FLAC, written
    a minute at a time (two hours take about 2 MB and a couple of seconds)."""
    sr = 16_000
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=sr)
        stream.layout, stream.format = "mono", "s16"
        res = av.AudioResampler(format="s16", layout="mono", rate=sr)
        for minute in range(seconds // 60):
            x = np.zeros(60 * sr, np.float32)
            if minute % every_min == 5:
                x[sr:sr + burst.size] = burst
            frame = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.time_base, frame.pts = sr, Fraction(1, sr), minute * 60 * sr
            for f in res.resample(frame):
                for pkt in stream.encode(f):
                    out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


def zero_flac_length(path: Path) -> Path:
    """Zero the total-samples field of a FLAC's STREAMINFO (\"unknown length\"), as a
    container that states no duration."""
    b = bytearray(path.read_bytes())
    assert b[:4] == b"fLaC"
    b[21] &= 0xF0  # STREAMINFO's 36-bit total samples: the low 4 bits here, 4 bytes after
    b[22:26] = bytes(4)
    path.write_bytes(bytes(b))
    return path
