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
