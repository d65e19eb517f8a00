"""The model stage and assembling a session.

`run_model` is the one place that calls the model (the batched engine or FunASR's own loop):
every path — the serial one, the streaming executor, predict — goes through it. `analysed`
reduces a part's model outputs to what is stored (segment rows, pooled curves) as soon as they
arrive, and `assemble` turns a prepared file and its analysed parts into a SessionResult.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.storage import analysers
from core.media.audio import SAMPLE_RATE
from core.base.curves import pool
from core.base.labels import LABELS
from core.analysis.metrics import fallback_action
from core.base.types import Curve, Segment, SessionResult, segment_id_for, session_id_for
from ingest.model import LoadedModel, Output
# Registered wherever segments are analysed (serial, streaming, Ray, the live stream's end).
from ingest import prosody as _prosody  # noqa: F401
from ingest.options import IngestOptions
from ingest.prepare import Part, Prepared

Infer = Callable[[LoadedModel, list[np.ndarray]], list[Output]]


def infer_function(engine: str, batch_seconds: float | None = None) -> Infer:
    """The batched engine (default) or FunASR's own loop; both give the same outputs."""
    if engine == "reference":
        from ingest.model import reference_infer
        return reference_infer
    from ingest.engine import EngineOptions, infer
    return functools.partial(infer, opts=EngineOptions(batch_seconds=batch_seconds))


def run_model(lm: LoadedModel, waves: list[np.ndarray], opts: IngestOptions,
              frame_feats: bool = False) -> list[Output]:
    """Model outputs for `waves`, in their order; the frame features (T × D per segment, far
    larger than anything stored) only when asked for."""
    return infer_function(opts.engine, opts.batch_seconds)(lm, waves, frame_feats=frame_feats)


def batch_budget(lm: LoadedModel, opts: IngestOptions) -> float:
    """Padded audio-seconds per model batch: the option, else the engine's default for the
    device (scaled to free GPU memory on CUDA)."""
    if opts.batch_seconds:
        return float(opts.batch_seconds)
    from ingest.engine import default_batch_seconds
    return default_batch_seconds(lm.device)


class CpuShare:
    """On CPU, the model's torch threads fitted to the cores other busy processes leave free
    (at least one): more threads than free cores make every parallel step wait on a thread
    that is not running, fewer leave cores idle. Refitted before each batch, restored at the
    end; on a GPU it does nothing."""

    def __init__(self, lm: LoadedModel):
        import torch
        self.torch, self.on = torch, lm.device == "cpu"
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        self.before = torch.get_num_threads()
        self.batches_at: dict[int, int] = {}  # threads → batches run with that many

    def fit(self, busy_elsewhere: int) -> None:
        if self.on:
            n = max(1, self.cores - busy_elsewhere)
            if n != self.torch.get_num_threads():
                self.torch.set_num_threads(n)
            self.batches_at[n] = self.batches_at.get(n, 0) + 1

    def __enter__(self) -> "CpuShare":
        return self

    def __exit__(self, *exc) -> None:
        if self.on:
            self.torch.set_num_threads(self.before)


@dataclass
class Analysed:
    """One part after the model: its segments (speaker and id given at assembly) and curves."""
    segments: list[tuple]  # (channel, start_s, end_s, label, confidence, scores, embedding,
    #                         rms, clip ratio, flags, fallback action, analysers' Found)
    curves: dict[int, list[tuple[np.ndarray, np.ndarray]]]  # channel → [(t_s, probs)]


def analysed(part: Part, outputs: list[Output], opts: IngestOptions,
             waves: list[np.ndarray] | None = None) -> Analysed:
    """The part's segment rows and curves from the model's outputs, and what every registered
    analyser after the model (core.storage.analysers) finds in the segments' samples: `waves`, else
    the part's own (still held)."""
    segments, curves = [], {}
    found = _analyse(part, outputs, waves)
    for (ch, s, e), (level, clipped, flags), out, more in zip(part.spans, part.quality, outputs,
                                                             found):
        top = int(np.argmax(out.scores))
        label, conf = LABELS[top], float(out.scores[top])
        segments.append((ch, round(part.offset_s + s, 3), round(part.offset_s + e, 3), label,
                         conf, out.scores, out.embedding, level, clipped, flags,
                         fallback_action(label, conf, opts.low_confidence), more))
        curves.setdefault(ch, []).append(pool(out.frame_logits, part.offset_s + s,
                                              opts.curve_hop_s, opts.curve_window_s))
    return Analysed(segments, curves)


def _analyse(part: Part, outputs: list[Output], waves) -> list[analysers.Found]:
    if not any(not a.model_stage for a in analysers.registered()):
        return [analysers.Found() for _ in outputs]
    if waves is None:
        if part.audio is None:
            raise RuntimeError("analysers need the part's samples: run them before release()")
        waves = part.waves
    spans = [analysers.Span(ch, part.offset_s + s, part.offset_s + e, w, SAMPLE_RATE,
                            {"emotion": out})
             for (ch, s, e), w, out in zip(part.spans, waves, outputs)]
    return analysers.run(spans)


def assemble(prep: Prepared, parts: list[Analysed]) -> SessionResult:
    """The SessionResult of a prepared file from its analysed parts, in file order."""
    if prep.result is not None:
        return prep.result
    sid = session_id_for(prep.sha256)
    segments, per_channel = [], {}
    counters: dict[int, int] = {}
    rows: dict[str, list[dict]] = {}
    founds = []
    for a in parts:
        for (ch, start, end, label, conf, scores, emb, level, clipped, flags, action,
             found) in a.segments:
            n = counters.get(ch, 0)
            counters[ch] = n + 1
            seg_id = segment_id_for(sid, ch, n)
            segments.append(Segment(seg_id, ch, prep.roles[ch], start, end, label, conf,
                                    scores, emb, level, clipped, flags, action,
                                    dict(found.values)))
            founds.append(found)
            for table, found_rows in found.rows.items():
                rows.setdefault(table, []).extend(
                    {"segment_id": seg_id, "channel": ch, **r} for r in found_rows)
        for ch, pieces in a.curves.items():
            per_channel.setdefault(ch, []).extend(pieces)
    curves = tuple(
        Curve(ch, prep.roles[ch], np.concatenate([t for t, _ in pieces]),
              np.concatenate([p for _, p in pieces]))
        for ch, pieces in sorted(per_channel.items()))
    result = SessionResult(sid, str(prep.path), prep.path.name, prep.sha256, prep.duration_s,
                           len(prep.roles), prep.meta, prep.channels, tuple(segments), curves,
                           codec=prep.codec, sample_rate=prep.rate, flags=prep.flags,
                           analyses=rows)
    return analysers.finish(result, list(zip(segments, founds)))
