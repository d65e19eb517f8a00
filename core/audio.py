"""Decoding any common container/codec to 16 kHz float32, one array per channel (PyAV)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


class AudioError(Exception):
    """A file that cannot be turned into audio; the message is the user-facing reason."""


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # (channels, n) float32 at SAMPLE_RATE
    codec: str
    source_rate: int

    @property
    def n_channels(self) -> int:
        return self.samples.shape[0]

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / SAMPLE_RATE


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def decode(path: str | Path, max_channels: int = 16) -> Decoded:
    """Decode the first audio stream of `path`, resampled to 16 kHz, channels kept apart."""
    import av

    path = Path(path)
    if not path.exists():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.error.InvalidDataError:
        raise AudioError("not a recognised audio file (unknown or corrupt container)") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise AudioError(f"cannot open as audio: {_short(e)}") from None
    with container:
        streams = container.streams.audio
        if not streams:
            raise AudioError("contains no audio stream")
        stream = streams[0]
        n_ch = stream.codec_context.channels or 1
        if n_ch > max_channels:
            raise AudioError(f"{n_ch} channels; at most {max_channels} are supported")
        layout = stream.codec_context.layout.name if n_ch <= 8 else None
        # Resample to planar float so each channel stays its own speaker.
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler keep its own clock on odd timestamps
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as e:
            if not chunks:
                raise AudioError(f"corrupt audio data: {_short(e)}") from None
            # A truncated tail still leaves the decoded head usable.
        codec = stream.codec_context.name
        rate = stream.codec_context.sample_rate or 0
    if not chunks:
        raise AudioError("no audio frames could be decoded")
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if samples.shape[0] != n_ch and samples.shape[0] == 1:
        samples = np.repeat(samples, n_ch, axis=0)
    if samples.shape[1] == 0:
        raise AudioError("decoded to zero samples")
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return Decoded(np.ascontiguousarray(samples), codec, rate)


def default_roles(n_channels: int) -> tuple[str, ...]:
    """Mono: one speaker; stereo: agent then customer (telephony convention); more: one each."""
    if n_channels == 1:
        return ("speaker",)
    if n_channels == 2:
        return ("agent", "customer")
    return tuple(f"speaker{i + 1}" for i in range(n_channels))


def _short(e: Exception) -> str:
    msg = str(e).split(":", 2)[-1].strip() if ":" in str(e) else str(e)
    return (msg or type(e).__name__)[:160]
