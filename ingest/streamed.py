"""Long recordings, block by block: decode a few minutes, find speech, run the model, keep the
segments and curves, drop the samples, go on. Memory stays at one block plus the results, so a
two-hour file costs what a five-minute one does.

Files the container says are longer than LONG_FILE_S take this path (see pipeline.prepare);
shorter ones are decoded whole as before. Speech that crosses a block boundary is cut there,
as the segmenter already cuts speech longer than max_segment_s.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from core import quality
from core.audio import SAMPLE_RATE, AudioError, decode_blocks, default_roles, probe_duration
from core.types import ChannelQuality, Curve, SessionResult, segment_id_for, session_id_for
from ingest.assemble import Prepared, assemble, infer_function
from ingest.model import LoadedModel
from ingest.options import IngestOptions
from ingest.vad import speech_spans

LONG_FILE_S = 20 * 60.0
BLOCK_S = 300.0
SILENT_PEAK = 1e-4  # a block of digital silence needs no voice activity detection
_STEP = 1 << 18


def is_long(path: Path) -> bool:
    duration = probe_duration(path)
    return duration is not None and duration > LONG_FILE_S


class _Channel:
    """Running level, clipping and speech totals for one channel across blocks."""

    def __init__(self):
        self.n = 0
        self.sumsq = 0.0
        self.clipped = 0
        self.speech_s = 0.0

    def add(self, x: np.ndarray, speech_s: float) -> None:
        self.n += x.size
        for i in range(0, x.size, _STEP):  # in steps, so no block-sized float64 copy is made
            part = x[i:i + _STEP].astype(np.float64)
            self.sumsq += float(np.dot(part, part))
            self.clipped += int(np.count_nonzero(np.abs(part) >= quality.CLIP_LEVEL))
        self.speech_s += speech_s

    def quality(self, ch: int, speaker: str) -> ChannelQuality:
        level = (self.sumsq / self.n) ** 0.5 if self.n else 0.0
        clipped = self.clipped / self.n if self.n else 0.0
        duration = self.n / SAMPLE_RATE
        return ChannelQuality(ch, speaker, duration, level, clipped, self.speech_s,
                              quality.flags(level, clipped, duration))


def analyse_streamed(prep, lm: LoadedModel, opts: IngestOptions,
                     block_s: float = BLOCK_S) -> SessionResult:
    """The SessionResult of `prep.path`, decoded and analysed one block at a time."""
    sid = session_id_for(prep.sha256)
    info: dict = {}
    roles: tuple[str, ...] = ()
    stats: list[_Channel] = []
    segments, curves = [], {}
    counters: dict[int, int] = {}
    offset_n = 0
    infer = infer_function(opts.engine, opts.batch_seconds)
    try:
        for block in decode_blocks(prep.path, block_s, info=info):
            if not roles:
                n_ch = block.shape[0]
                roles = tuple(prep.meta.roles or (opts.stereo_roles if n_ch == 2
                                                  else default_roles(n_ch)))
                if len(roles) != n_ch:
                    return _failed(prep, f"{len(roles)} speaker roles given for {n_ch} channels")
                stats = [_Channel() for _ in range(n_ch)]
            spans = []
            for ch, x in enumerate(block):
                silent = max(float(x.max()), -float(x.min())) < SILENT_PEAK
                found = [] if silent else speech_spans(x, opts)
                stats[ch].add(x, sum(e - s for s, e in found))
                spans.extend((ch, s, e) for s, e in found)
            if spans:
                spans.sort(key=lambda s: (s[1], s[0]))
                part = Prepared(prep.path, prep.sha256, prep.meta, samples=block, roles=roles,
                                spans=spans, codec=info.get("codec"), rate=info.get("rate"))
                waves = [block[ch, int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)]
                         for ch, s, e in spans]
                result = assemble(part, infer(lm, waves), opts)
                offset = offset_n / SAMPLE_RATE
                for seg in result.segments:
                    n = counters.get(seg.channel, 0)
                    counters[seg.channel] = n + 1
                    segments.append(dataclasses.replace(
                        seg, segment_id=segment_id_for(sid, seg.channel, n),
                        start_s=round(seg.start_s + offset, 3), end_s=round(seg.end_s + offset, 3)))
                for c in result.curves:
                    curves.setdefault(c.channel, []).append((c.t_s + offset, c.probs))
            offset_n += block.shape[1]
            del block
    except AudioError as e:
        if not offset_n:
            return _failed(prep, str(e))
        # A broken tail after good blocks: keep what decoded, as decode() does.
    if not offset_n:
        return _failed(prep, "no audio frames could be decoded")
    channels = tuple(s.quality(ch, roles[ch]) for ch, s in enumerate(stats))
    if not segments:
        loudest = max(c.rms for c in channels)
        return _failed(prep, f"no speech found (silent or too quiet: RMS {loudest:.4f})")
    return SessionResult(
        sid, str(prep.path), prep.path.name, prep.sha256, offset_n / SAMPLE_RATE, len(roles),
        prep.meta, channels, tuple(segments),
        tuple(Curve(ch, roles[ch], np.concatenate([t for t, _ in parts]),
                    np.concatenate([p for _, p in parts]))
              for ch, parts in sorted(curves.items())),
        codec=info.get("codec"), sample_rate=info.get("rate"))


def _failed(prep, reason: str) -> SessionResult:
    return SessionResult.failed(prep.path, prep.sha256, prep.meta, reason)
