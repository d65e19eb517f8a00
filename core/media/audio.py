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
    info: dict = {}
    chunks = list(_pcm_chunks(Path(path), max_channels, info))
    if not chunks:
        raise AudioError("no audio frames could be decoded")
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    del chunks
    if samples.shape[1] == 0:
        raise AudioError("decoded to zero samples")
    return Decoded(np.ascontiguousarray(_finite(samples)), info["codec"], info["rate"])


# -- streamed decoding: long files block by block ---------------------------------------------
def probe_duration(path: str | Path) -> float | None:
    """The container's stated duration in seconds, without decoding; None when unknown."""
    import av

    try:
        with av.open(str(path), mode="r") as c:
            if not c.streams.audio:
                return None
            st = c.streams.audio[0]
            if st.duration is not None and st.time_base is not None:
                return float(st.duration * st.time_base)
            if c.duration is not None:
                return c.duration / 1_000_000  # av.time_base
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError):
        return None
    return None


def decode_blocks(path: str | Path, block_s: float = 300.0, max_channels: int = 16,
                  info: dict | None = None):
    """Yield (channels, n) float32 blocks of `block_s` seconds at 16 kHz (the last shorter).

    Only one block (plus one decoder frame) is held at a time, so hours of audio decode in
    bounded memory. `info` receives codec, source rate and channels once the stream is open,
    the duration the stream states (`stated_s`, when it states one) and, when decoding stopped
    early on bad data, `truncated` with the decoder's reason.
    """
    info = {} if info is None else info
    size = int(block_s * SAMPLE_RATE)
    pending: list[np.ndarray] = []
    held = 0
    for chunk in _pcm_chunks(Path(path), max_channels, info):
        pending.append(chunk)
        held += chunk.shape[1]
        while held >= size:
            joined = np.concatenate(pending, axis=1)
            pending = []
            rest = joined[:, size:].copy()  # the few samples past the block, not a view of it
            block = _finite(joined[:, :size])
            del joined
            yield block if block.flags.c_contiguous else np.ascontiguousarray(block)
            del block
            pending, held = ([rest] if rest.shape[1] else []), rest.shape[1]
    if held:
        yield np.ascontiguousarray(_finite(np.concatenate(pending, axis=1)))


def _pcm_chunks(path: Path, max_channels: int, info: dict):
    """Decoded audio as (channels, n) float32 chunks at 16 kHz; AudioError with the reason."""
    import av

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
        info["codec"] = stream.codec_context.name
        info["rate"] = stream.codec_context.sample_rate or 0
        info["channels"] = n_ch
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            info["stated_s"] = float(stream.duration * stream.time_base)
        # Mono and stereo go through one planar resampler. Wider files go channel by channel:
        # FFmpeg's resampler crashes the process on layouts it cannot name ("8 channels").
        layout = stream.codec_context.layout.name if stream.codec_context.layout else ""
        joint = n_ch <= 2 and layout in ("mono", "stereo")
        resample = _Joint(n_ch) if joint else _PerChannel(n_ch)
        produced = False
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler keep its own clock on odd timestamps
                out = resample(frame)
                if out is not None:
                    produced = True
                    yield out
            out = resample(None)
            if out is not None:
                yield out
        except av.error.FFmpegError as e:
            if not produced:
                raise AudioError(f"corrupt audio data: {_short(e)}") from None
            # A truncated tail still leaves the decoded head usable; the session is flagged.
            info["truncated"] = f"decoding stopped on bad data: {_short(e)}"


class _Joint:
    def __init__(self, n_ch: int):
        import av
        self.n_ch = n_ch
        self.res = av.AudioResampler(format="fltp", layout="stereo" if n_ch == 2 else "mono",
                                     rate=SAMPLE_RATE)

    def __call__(self, frame):
        parts = [o.to_ndarray() for o in self.res.resample(frame)]
        if not parts:
            return None
        x = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
        if x.shape[0] != self.n_ch and x.shape[0] == 1:
            x = np.repeat(x, self.n_ch, axis=0)
        return x


_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


class _PerChannel:
    """Split each frame into mono float frames by hand and resample every channel alone."""

    def __init__(self, n_ch: int):
        import av
        self.n_ch = n_ch
        self.res = [av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                    for _ in range(n_ch)]

    def __call__(self, frame):
        import av
        if frame is None:
            outs = [[o.to_ndarray().reshape(-1) for o in r.resample(None)] for r in self.res]
        else:
            fmt = frame.format
            a = frame.to_ndarray()
            x = a if fmt.is_planar else a.reshape(-1, self.n_ch).T
            name = fmt.name.rstrip("p")
            x = x.astype(np.float32)
            if name == "u8":
                x = (x - 128.0) / 128.0
            elif name in _SCALE:
                x /= _SCALE[name]
            outs = []
            for ch in range(self.n_ch):
                m = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[ch:ch + 1]),
                                               format="flt", layout="mono")
                m.sample_rate = frame.sample_rate
                outs.append([o.to_ndarray().reshape(-1) for o in self.res[ch].resample(m)])
        n = min(sum(p.size for p in parts) for parts in outs)
        if n == 0:
            return None
        return np.stack([np.concatenate(parts)[:n] for parts in outs])


def shortfall(info: dict, decoded_s: float) -> str | None:
    """Why a decode looks cut short, or None: the decoder stopped on bad data, or the stream
    stated a duration well beyond what decoded (a file cut off mid-way decodes without error)."""
    if info.get("truncated"):
        return info["truncated"]
    stated = info.get("stated_s")
    if stated and stated - decoded_s > max(1.0, 0.02 * stated):
        return f"decoded {decoded_s:.1f} s of the {stated:.1f} s the file states"
    return None


def _finite(x: np.ndarray) -> np.ndarray:
    return x if np.isfinite(x).all() else np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)


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
