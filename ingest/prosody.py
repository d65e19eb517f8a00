"""The `prosody` analyser: pitch, loudness and speaking rate of each speech segment (librosa).

Per segment it stores `pitch_hz` (median F0 of the voiced frames; NULL where none is voiced),
`loudness_dbfs` (RMS level of the segment, dB below full scale), `rate_wps` (words a second,
where the `asr` analyser heard words in the segment) and two curves on `segments`,
`pitch_curve` and `loudness_curve`: one float32 every 0.1 s (core.analysis.prosody.HOP_S, the emotion
curves' step) from the segment's start, pitch 0 where unvoiced. Stored on the segment row,
they are replaced and erased with it and travel in the shards' segments table.

Cost. Pitch is `librosa.yin` at that coarse hop (a frame of 64 ms every 100 ms), not pyin: pyin
decodes voicing with a Viterbi pass that costs far more and the 0.1 s curves do not need it;
voicing here is a level and zero-crossing gate. librosa's numba kernels compile the first time
a process imports them (measured 40-70 s cold on the shared, loaded 2-core machine); numba's
on-disk cache is put under the Emoscope cache (`$EMOSCOPE_CACHE/numba`, or NUMBA_CACHE_DIR
where set), so the compile happens once per machine and a process then pays only the imports
(about 2-7 s here). `bench/prosody.py` measures the cost per audio hour beside the emotion
model's; docs/metrics.md says why it is on by default (`[analysers.prosody] enabled = false`
turns it off).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.storage.analysers import Analyser, Column, Found, Span, register_analyser
from core.analysis.prosody import HOP_S
# Speaking rate reads the asr analyser's answer, so it must be registered first.
from ingest import speech_to_text as _asr  # noqa: F401
from ingest.speech_to_text import words_of

FLOOR_DB = -100.0  # what digital silence reads as
FRAME_S = 0.064  # YIN's analysis frame: two periods of 65 Hz with room to spare
VOICED_RANGE_DB = 25.0  # a voiced frame is within this of the segment's loudest frame ...
VOICED_MIN_DB = -50.0  # ... and above this level ...
VOICED_MAX_ZCR = 0.2  # ... with fewer zero crossings per sample than fricatives have
OFF = ("off", "0", "false", "no")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


@dataclass(frozen=True)
class ProsodyConfig:
    # [analysers.prosody] enabled = false: measure nothing; unset: $EMOSCOPE_PROSODY (on/off),
    # else on
    enabled: bool | None = None
    fmin: float = 65.0  # the pitch range searched, Hz (a low male voice to a raised high one)
    fmax: float = 600.0


def numba_cache() -> Path:
    """Where librosa's compiled kernels are kept: NUMBA_CACHE_DIR, else the Emoscope cache."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    root = Path(os.environ.get("EMOSCOPE_CACHE", Path.home() / ".cache" / "emoscope"))
    return root / "numba"


def librosa():
    """librosa, with numba caching its compiled kernels on disk under the Emoscope cache (a
    read-only site-packages would otherwise mean a compile in every process)."""
    if "librosa.core.pitch" not in sys.modules:
        path = numba_cache()
        path.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(path)
        if "numba" in sys.modules:  # numba reads its settings when first imported
            from numba.core import config
            config.reload_config()
    import librosa as lr
    import librosa.core.pitch  # noqa: F401  (compiles or loads its kernels now, not mid-run)
    import librosa.feature  # noqa: F401
    return lr


def measure(wave: np.ndarray, rate: int, fmin: float = 65.0, fmax: float = 600.0) -> dict:
    """Pitch, loudness and their curves of one stretch of speech (float32 mono at `rate`)."""
    lr = librosa()
    x = np.asarray(wave, np.float32)
    power = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    level = 10 * np.log10(power) if power > 0 else FLOOR_DB
    hop = max(1, round(HOP_S * rate))
    frame = int(2 ** np.ceil(np.log2(FRAME_S * rate)))
    # Whole frames only (no padding to dip the level at the edges), centred at
    # (k + 0.5) * HOP_S, where the emotion curves put their points.
    y = x[max(0, hop // 2 - frame // 2):]
    if y.size < frame:
        return {"pitch_hz": None, "loudness_dbfs": round(max(level, FLOOR_DB), 3),
                "pitch_curve": [], "loudness_curve": []}
    f0 = lr.yin(y, fmin=fmin, fmax=fmax, sr=rate, frame_length=frame, hop_length=hop,
                center=False)
    rms = lr.feature.rms(y=y, frame_length=frame, hop_length=hop, center=False)[0]
    zcr = lr.feature.zero_crossing_rate(y, frame_length=frame, hop_length=hop, center=False)[0]
    db = 20 * np.log10(np.maximum(rms, 10 ** (FLOOR_DB / 20)))
    voiced = ((db >= max(VOICED_MIN_DB, db.max() - VOICED_RANGE_DB)) & (zcr < VOICED_MAX_ZCR)
              & (f0 > fmin * 1.01) & (f0 < fmax * 0.99))  # at a bound: no period was found
    if voiced.sum() >= 2:  # an octave or more off the segment's median: a YIN octave error
        off = np.abs(np.log2(f0 / np.median(f0[voiced])))
        voiced &= off < 0.9
    pitch = np.where(voiced, f0, 0.0).astype(np.float32)
    return {"pitch_hz": round(float(np.median(f0[voiced])), 3) if voiced.sum() >= 2 else None,
            "loudness_dbfs": round(max(level, FLOOR_DB), 3),
            "pitch_curve": pitch.round(2).tolist(),
            "loudness_curve": db.astype(np.float32).round(2).tolist()}


def speaking_rate(found_asr: Found | None, start_s: float, end_s: float) -> float | None:
    """Words a second in a segment, from what the asr analyser heard in it; None where no
    words were heard (no backend, or nothing recognisable)."""
    if found_asr is None or found_asr.more is None or end_s <= start_s:
        return None
    heard = found_asr.more[0]
    # Chinese is written without spaces: each Han character is one spoken syllable, counted
    # as a word (the usual rate for Chinese speech, characters a second).
    n = len(heard.words) or len(words_of(heard.text)) + len(HAN.findall(heard.text))
    return round(n / (end_s - start_s), 3) if n else None


@register_analyser
class Prosody(Analyser):
    """Pitch, loudness and speaking rate of every speech segment (see the module's text)."""
    name = "prosody"
    Config = ProsodyConfig
    needs = ("asr",)
    columns = (Column("pitch_hz", "DOUBLE", pa.float64()),
               Column("loudness_dbfs", "DOUBLE", pa.float64()),
               Column("rate_wps", "DOUBLE", pa.float64()),
               Column("pitch_curve", "FLOAT[]", pa.list_(pa.float32())),
               Column("loudness_curve", "FLOAT[]", pa.list_(pa.float32())))
    # The columns are core's (core/storage/migrations.py 0014_prosody): the alert rules and every
    # reader use them whether or not this process measures anything.

    @property
    def on(self) -> bool:
        if self.config.enabled is not None:
            return bool(self.config.enabled)
        return os.environ.get("EMOSCOPE_PROSODY", "on").strip().lower() not in OFF

    def load(self) -> None:
        if self.on:
            librosa()

    def analyse(self, spans: list[Span]) -> list[Found]:
        if not self.on:
            return [Found() for _ in spans]
        out = []
        for s in spans:
            values = measure(s.wave, s.rate, self.config.fmin, self.config.fmax)
            values["rate_wps"] = speaking_rate(s.found.get("asr"), s.start_s, s.end_s)
            out.append(Found(values))
        return out


def use(enabled: bool | None = None) -> bool:
    """Whether this process measures prosody: `enabled`, else [analysers.prosody] enabled,
    else $EMOSCOPE_PROSODY, else on; librosa is loaded now, so the first file does not wait."""
    from core.storage.analysers import configure, instance, state
    if enabled is not None:
        configure({Prosody.name: {**state()[1].get(Prosody.name, {}), "enabled": bool(enabled)}})
    return instance(Prosody.name).on


def measure_many(waves, rate: int) -> list[dict] | None:
    """`measure` each wave with this process's settings; None where prosody is off (the live
    stream's closed utterances, for the raised_voice rule as the call goes)."""
    from core.storage.analysers import instance
    a = instance(Prosody.name)
    if not a.on:
        return None
    return [measure(w, rate, a.config.fmin, a.config.fmax) for w in waves]
