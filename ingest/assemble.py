"""Assembling a session: a prepared file (decoded, speech found) plus the model's outputs for
its segments → a SessionResult. Shared by the whole-file and the block-by-block paths."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import quality
from core.audio import SAMPLE_RATE
from core.curves import pool
from core.labels import LABELS
from core.metrics import fallback_action
from core.types import (ChannelQuality, Curve, Segment, SessionMeta, SessionResult,
                        segment_id_for, session_id_for)
from ingest.model import LoadedModel, Output
from ingest.options import IngestOptions


@dataclass
class Prepared:
    """A decoded file with its speech found, waiting for the model."""
    path: Path
    sha256: str
    meta: SessionMeta
    result: SessionResult | None = None  # set when the file already failed or was skipped
    skipped: bool = False
    streamed: bool = False  # long file: decoded and analysed block by block (ingest/streamed)
    samples: np.ndarray | None = None
    codec: str | None = None
    rate: int | None = None
    roles: tuple[str, ...] = ()
    channels: tuple[ChannelQuality, ...] = ()
    spans: list[tuple[int, float, float]] = field(default_factory=list)  # (channel, start, end)
    timings: dict = field(default_factory=dict)


def assemble(prep: Prepared, outputs: list[Output], opts: IngestOptions) -> SessionResult:
    """Turn model outputs for a prepared file into a SessionResult."""
    sid = session_id_for(prep.sha256)
    segments, per_channel = [], {}
    counters: dict[int, int] = {}
    for (ch, s, e), out in zip(prep.spans, outputs):
        n = counters.get(ch, 0)
        counters[ch] = n + 1
        x = prep.samples[ch, int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)]
        level, clipped, flags = quality.measure(x, SAMPLE_RATE)
        top = int(np.argmax(out.scores))
        label, conf = LABELS[top], float(out.scores[top])
        segments.append(Segment(segment_id_for(sid, ch, n), ch, prep.roles[ch], round(s, 3),
                                round(e, 3), label, conf, out.scores, out.embedding, level,
                                clipped, flags, fallback_action(label, conf, opts.low_confidence)))
        t, probs = pool(out.frame_logits, s, opts.curve_hop_s, opts.curve_window_s)
        per_channel.setdefault(ch, []).append((t, probs))
    curves = tuple(
        Curve(ch, prep.roles[ch], np.concatenate([t for t, _ in parts]),
              np.concatenate([p for _, p in parts]))
        for ch, parts in sorted(per_channel.items()))
    return SessionResult(sid, str(prep.path), prep.path.name, prep.sha256,
                         prep.samples.shape[1] / SAMPLE_RATE, prep.samples.shape[0], prep.meta,
                         prep.channels, tuple(segments), curves, codec=prep.codec,
                         sample_rate=prep.rate)


def infer_function(engine: str, batch_seconds: float | None = None
                   ) -> Callable[[LoadedModel, list[np.ndarray]], list[Output]]:
    """The batched engine (default) or FunASR's own loop; both give the same outputs."""
    if engine == "reference":
        from ingest.model import reference_infer
        return reference_infer
    from ingest.engine import EngineOptions, infer
    return functools.partial(infer, opts=EngineOptions(batch_seconds=batch_seconds))
