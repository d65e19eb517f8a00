"""Signal checks (seed §5.2): level, clipping and length. Audio is flagged, never dropped."""
from __future__ import annotations

import numpy as np

TOO_QUIET_RMS = 0.01
CLIP_LEVEL = 0.999
CLIPPED_RATIO = 0.001  # share of samples at full scale
TOO_SHORT_S = 0.5


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def clip_ratio(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x) >= CLIP_LEVEL)) if x.size else 0.0


def flags(level: float, clipped: float, duration_s: float) -> tuple[str, ...]:
    out = []
    if level < TOO_QUIET_RMS:
        out.append("too_quiet")
    if clipped >= CLIPPED_RATIO:
        out.append("clipped")
    if duration_s < TOO_SHORT_S:
        out.append("too_short")
    return tuple(out)


def measure(x: np.ndarray, sample_rate: int) -> tuple[float, float, tuple[str, ...]]:
    """RMS, clipping ratio and flags of one stretch of samples."""
    level, clipped = rms(x), clip_ratio(x)
    return level, clipped, flags(level, clipped, x.size / sample_rate)


# Telephone audio is sampled at 8 kHz, so it carries nothing above 4 kHz, and emotion2vec is
# known to be less reliable without that band. Effective bandwidth is measured from the
# speech's spectrum, so audio upsampled from a phone line is caught as well as 8 kHz files.
NARROWBAND_HZ = 4000.0
NARROWBAND_RATE = 8000  # a source sampled at this rate or below is narrowband by definition
BAND_HZ = 250.0  # width of the bands the spectrum is pooled into
BAND_FLOOR = 1e-4  # −40 dB: the share of energy allowed above the effective bandwidth
_FRAME = 512


def band_energy(x: np.ndarray, rate: int) -> np.ndarray:
    """Energy of `x` in BAND_HZ-wide bands from 0 Hz to rate/2 (Hann-windowed frames)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < _FRAME:
        x = np.pad(x, (0, _FRAME - x.size))
    k = x.size // _FRAME
    frames = x[:k * _FRAME].reshape(k, _FRAME) * np.hanning(_FRAME)
    power = np.square(np.abs(np.fft.rfft(frames, axis=1))).sum(axis=0)
    freqs = np.fft.rfftfreq(_FRAME, 1.0 / rate)
    n_bands = int(np.ceil(rate / 2 / BAND_HZ))
    idx = np.minimum((freqs // BAND_HZ).astype(int), n_bands - 1)
    return np.bincount(idx, weights=power, minlength=n_bands)


def effective_bandwidth(bands) -> float | None:
    """The band edge above which less than BAND_FLOOR of the energy lies (Hz); None when
    there is no energy to measure."""
    e = np.asarray(bands, dtype=np.float64)
    total = e.sum()
    if e.size == 0 or total <= 0:
        return None
    at_or_above = np.cumsum(e[::-1])[::-1] / total
    return float((np.flatnonzero(at_or_above >= BAND_FLOOR).max() + 1) * BAND_HZ)


def is_narrowband(source_rate: int | None, bandwidth_hz: float | None) -> bool:
    return bool((source_rate and source_rate <= NARROWBAND_RATE)
                or (bandwidth_hz is not None and bandwidth_hz <= NARROWBAND_HZ))

NARROWBAND_CAVEAT = ("Telephone-band audio (nothing above 4 kHz): emotion2vec is known to be "
                     "less reliable here. A head trained on the organisation's own calls "
                     "(emoscope head train, the Calibration page) is the remedy.")


def caveats(flags) -> list[str]:
    """What a reader must be told about labels measured on audio with these quality flags."""
    found = {f for f in (flags if flags is not None else ()) if f}
    return [NARROWBAND_CAVEAT] if "narrowband" in found else []


def has_flag(flags, flag: str) -> bool:
    return flags is not None and not isinstance(flags, float) and flag in list(flags)
