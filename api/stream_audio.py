"""Incoming live audio → (channels, n) float32 at 16 kHz.

pcm16: little-endian signed 16-bit samples at 16 kHz, channels interleaved; a message may end
mid-sample (the odd byte waits for the next). opus: one Opus packet per message (as an Opus
encoder or WebRTC emits them), decoded by FFmpeg's decoder through PyAV and resampled.
"""
from __future__ import annotations

import numpy as np

from core.media.audio import SAMPLE_RATE

ENCODINGS = ("pcm16", "opus")


class BadAudio(ValueError):
    """A chunk that cannot be decoded; the message is the reason."""


class Pcm16:
    def __init__(self, channels: int):
        self.channels = channels
        self.width = 2 * channels
        self._rest = b""

    def __call__(self, data: bytes) -> np.ndarray:
        data = self._rest + data
        whole = len(data) - len(data) % self.width
        self._rest = data[whole:]
        x = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0
        return x.reshape(-1, self.channels).T.copy()


class Opus:
    def __init__(self, channels: int):
        import av

        self.channels = channels
        self.codec = av.CodecContext.create("libopus" if _has("libopus") else "opus", "r")
        self.codec.sample_rate = 48_000
        self.codec.layout = "stereo" if channels == 2 else "mono"
        self.resampler = av.AudioResampler(format="fltp", layout=self.codec.layout.name,
                                           rate=SAMPLE_RATE)

    def __call__(self, data: bytes) -> np.ndarray:
        import av

        try:
            frames = self.codec.decode(av.Packet(data))
        except (av.error.FFmpegError, ValueError) as e:
            raise BadAudio(f"not an Opus packet ({str(e)[:120]})") from None
        parts = [o.to_ndarray() for f in frames for o in self.resampler.resample(f)]
        if not parts:
            return np.zeros((self.channels, 0), np.float32)
        x = np.concatenate(parts, axis=1).astype(np.float32)
        if x.shape[0] != self.channels:  # a mono packet on a stereo stream, or the reverse
            x = np.repeat(x.mean(axis=0, keepdims=True), self.channels, axis=0)
        return x


def _has(name: str) -> bool:
    import av
    return name in av.codecs_available


def decoder(encoding: str, channels: int):
    if encoding == "pcm16":
        return Pcm16(channels)
    if encoding == "opus":
        return Opus(channels)
    raise BadAudio(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")


# -- out: the stream as a WAV file, for the worker to store -----------------------------------
def wav_chunks(channels: list[np.ndarray], n: int, pcm16: bool,
               block: int = SAMPLE_RATE * 10):
    """The first `n` samples of each channel as one WAV file, in pieces (header first), so an
    hour of audio is never copied whole. pcm16 streams are written as 16-bit PCM — exactly the
    samples received — and opus streams as 32-bit float, exactly the samples decoded: the
    worker's decoder then reads back the very samples the live analysis saw."""
    import struct

    nch, width = len(channels), (2 if pcm16 else 4)
    data = n * nch * width
    fmt = struct.pack("<HHIIHH", 1 if pcm16 else 3, nch, SAMPLE_RATE,
                      SAMPLE_RATE * nch * width, nch * width, 8 * width)
    if pcm16:
        chunks = b"fmt " + struct.pack("<I", 16) + fmt
    else:  # IEEE float: an 18-byte fmt chunk and a fact chunk
        chunks = (b"fmt " + struct.pack("<I", 18) + fmt + struct.pack("<H", 0)
                  + b"fact" + struct.pack("<II", 4, n))
    yield (b"RIFF" + struct.pack("<I", 4 + len(chunks) + 8 + data) + b"WAVE" + chunks
           + b"data" + struct.pack("<I", data))
    for i in range(0, n, block):
        x = np.stack([c[i:min(n, i + block)] for c in channels], axis=1)  # interleaved
        if pcm16:
            yield np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()
        else:
            yield x.astype("<f4").tobytes()
