"""The session timeline figure and how a click on it is read."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.base.labels import COLORS, LABELS, ZH
from dashboard.components import charts


def session():
    seg = pd.DataFrame({
        "segment_id": [f"s-c{c}-{i:05d}" for c, i in ((0, 0), (1, 0), (0, 1))],
        "channel": [0, 1, 0], "speaker": ["agent", "customer", "agent"],
        "start_s": [0.5, 2.0, 6.0], "end_s": [1.5, 4.0, 8.0],
        "label": ["angry", "happy", "sad"], "confidence": [0.9, 0.3, 0.6]})
    t = np.arange(0, 10, 0.1)
    frames = pd.concat([pd.DataFrame(np.full((len(t), 9), 1 / 9), columns=LABELS)
                        .assign(session_id="s", channel=c, t_s=t) for c in (0, 1)])
    return seg, frames


def test_one_lane_per_speaker_with_nine_curves_and_segment_bars():
    seg, frames = session()
    fig = charts.timeline(frames, seg, "zh")
    curves = [t for t in fig.data if t.type == "scatter" and t.name != "segment"]
    assert len(curves) == 2 * 9
    assert {t.name for t in curves} == set(ZH.values())
    assert {t.line.color for t in curves} == set(COLORS.values())
    bars = [t for t in fig.data if t.type == "bar"]
    assert [len(b.x) for b in bars] == [2, 1]  # agent lane, customer lane
    assert list(bars[0].marker.color) == [COLORS["angry"], COLORS["sad"]]
    assert bars[0].marker.opacity[0] > bars[0].marker.opacity[1]  # more confident, more opaque
    handles = [t for t in fig.data if t.name == "segment"]
    assert [list(h.customdata[:, 1]) for h in handles] == [[0.0, 2.0], [1.0]]
    assert {t.yaxis for t in fig.data} == {"y", "y2"}


def test_clicked_reads_every_form_of_customdata():
    assert charts.clicked({"x": 7.0, "customdata": [6.0, 2.0]}) == (6.0, 2)
    assert charts.clicked({"x": 7.0, "customdata": {"0": 6.0, "1": 2.0}}) == (6.0, 2)
    assert charts.clicked({"x": 3.3, "customdata": [3.3, -1.0]}) == (3.3, -1)
    assert charts.clicked({"x": 4.2}) == (4.2, -1)


def test_gaps_break_the_curves():
    seg, frames = session()
    part = frames[frames.channel == 0]
    part = part[(part.t_s < 2) | (part.t_s > 6)]
    out = charts._gaps(part)
    assert out[LABELS].isna().all(axis=1).sum() == 1
