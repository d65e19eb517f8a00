"""How a voice sounded besides its emotion: pitch, loudness and speaking rate per segment, and
the "raised voice" fact rules use.

The `prosody` analyser (ingest/prosody.py, librosa) measures each speech segment and stores
`pitch_hz`, `loudness_dbfs`, `rate_wps` and two curves, `pitch_curve` and `loudness_curve`,
one value every HOP_S seconds from the segment's start (the emotion curves' step). This module
only reads those values: numpy, no librosa.

Raised voice: a segment whose pitch is at least `pitch_semitones` above AND whose loudness is
at least `loudness_db` above the same speaker's own median in the session. A speaker's median
means something only over enough of their speech, so with fewer than MIN_SEGMENTS measured
segments nothing of theirs is raised. Both thresholds live in emoscope.toml (the
`raised_voice` alert rule) and docs/metrics.md.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

HOP_S = 0.1  # one curve value per 0.1 s, as the emotion frames (ingest.options.curve_hop_s)
PITCH_SEMITONES = 3.0  # defaults of the raised_voice rule (emoscope.toml sets them)
LOUDNESS_DB = 6.0
MIN_SEGMENTS = 4  # measured segments of a speaker before their median is a baseline
COLUMNS = ("pitch_hz", "loudness_dbfs", "rate_wps", "pitch_curve", "loudness_curve")


def semitones(hz, reference_hz) -> np.ndarray:
    """How far `hz` is above `reference_hz`, in semitones (12 to an octave)."""
    return 12.0 * np.log2(np.asarray(hz, float) / float(reference_hz))


def raised_voice(seg, pitch_semitones: float = PITCH_SEMITONES,
                 loudness_db: float = LOUDNESS_DB,
                 min_segments: int = MIN_SEGMENTS) -> np.ndarray:
    """Per row of `seg` (a segments DataFrame with speaker, pitch_hz and loudness_dbfs, in any
    order, of one session): is the voice raised there? Rows without a measured pitch or
    loudness are never raised and do not count towards the median."""
    if not len(seg) or "pitch_hz" not in seg or "loudness_dbfs" not in seg:
        return np.zeros(len(seg), bool)
    speaker = np.asarray(seg["speaker"], object)
    return _raised(speaker, _floats(seg["pitch_hz"]), _floats(seg["loudness_dbfs"]),
                   pitch_semitones, loudness_db, min_segments)


def _raised(speaker, pitch, loud, pitch_semitones, loudness_db, min_segments) -> np.ndarray:
    out = np.zeros(len(speaker), bool)
    for sp in dict.fromkeys(speaker.tolist()):
        mine = speaker == sp
        out[mine] = speaker_raised(pitch[mine], loud[mine], pitch_semitones, loudness_db,
                                   min_segments)[0]
    return out


def speaker_raised(pitch, loud, pitch_semitones: float = PITCH_SEMITONES,
                   loudness_db: float = LOUDNESS_DB, min_segments: int = MIN_SEGMENTS
                   ) -> tuple[np.ndarray, float | None, float | None]:
    """One speaker's segments of one session (pitch Hz, loudness dBFS; NaN where not
    measured): which are raised, and the speaker's median pitch and loudness (None, and
    nothing raised, with fewer than `min_segments` measured segments)."""
    pitch, loud = np.asarray(pitch, float), np.asarray(loud, float)
    measured = np.isfinite(pitch) & (pitch > 0) & np.isfinite(loud)
    if measured.sum() < max(1, min_segments):
        return np.zeros(len(pitch), bool), None, None
    p_med, l_med = float(np.median(pitch[measured])), float(np.median(loud[measured]))
    up = semitones(np.where(measured, pitch, p_med), p_med)
    raised = measured & (up >= pitch_semitones - 1e-9) & (loud - l_med >= loudness_db - 1e-9)
    return raised, p_med, l_med


def _listlike(v) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _floats(col) -> np.ndarray:
    return pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(float)


def curves(seg: pd.DataFrame) -> pd.DataFrame:
    """The segments' stored curves as rows (channel, speaker, t_s, pitch_hz, loudness_dbfs),
    one per HOP_S, in time order; empty where nothing was measured."""
    cols = ["channel", "speaker", "t_s", "pitch_hz", "loudness_dbfs"]
    if not len(seg) or "pitch_curve" not in seg or "loudness_curve" not in seg:
        return pd.DataFrame(columns=cols)
    parts = []
    for ch, sp, start, pc, lc in zip(seg.channel, seg.speaker, seg.start_s, seg.pitch_curve,
                                     seg.loudness_curve):
        if not (_listlike(pc) and _listlike(lc)):  # NULL: not measured
            continue
        p, lo = np.asarray(pc, float), np.asarray(lc, float)
        if p.size == 0:
            continue
        parts.append(pd.DataFrame({"channel": ch, "speaker": sp,
                                   "t_s": float(start) + (np.arange(p.size) + 0.5) * HOP_S,
                                   "pitch_hz": p, "loudness_dbfs": lo}))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True).sort_values(["channel", "t_s"], kind="stable") \
        .reset_index(drop=True)
