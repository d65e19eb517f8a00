"""A toy analyser: each segment's RMS loudness in dB (a column on segments) and its peak (a
row of a table of its own) — everything a new analyser needs, in one module with one
migration. tests/test_analysers.py registers it and finds its values on every path."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.storage.analysers import Analyser, Column, Found, Table, create_table, register_analyser

PEAKS = Table("loudness_peaks", (Column("start_s", "DOUBLE", pa.float64()),
                                 Column("end_s", "DOUBLE", pa.float64()),
                                 Column("peak", "DOUBLE", pa.float64())))


@dataclass(frozen=True)
class LoudnessConfig:
    floor_db: float = -120.0  # what digital silence reads as


@register_analyser
class Loudness(Analyser):
    name = "loudness"
    Config = LoudnessConfig
    columns = (Column("loudness_db", "DOUBLE", pa.float64()),)
    tables = (PEAKS,)
    needs = ("emotion",)
    migrations = (("loudness_0001", "ALTER TABLE segments ADD COLUMN loudness_db DOUBLE;\n"
                   + create_table(PEAKS)),)

    def analyse(self, spans):
        out = []
        for s in spans:
            assert s.found["emotion"].scores.shape == (9,)  # the model's output is at hand
            x = s.wave.astype(np.float64)
            rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
            db = 20 * np.log10(rms) if rms > 0 else self.config.floor_db
            out.append(Found({"loudness_db": round(float(db), 6)},
                             {"loudness_peaks": [{"start_s": s.start_s, "end_s": s.end_s,
                                                  "peak": float(np.abs(x).max(initial=0))}]}))
        return out
