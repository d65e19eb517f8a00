"""Prepare: hash, decode, quality and speech detection of one file — everything before the
model, with no store and no torch (the streaming executor runs it in its own processes).

A file is decoded in blocks whatever its container says about its length. Up to LONG_FILE_S
of audio is held and analysed whole (speech found over each whole channel); a file that turns
out longer goes on block by block (BLOCK_S each), so memory stays at LONG_FILE_S of audio at
most. Each stretch's speech reaches the model as one `Part`; the `Prepared` summary (duration,
channel quality, codec, flags) comes last. Speech that crosses a block boundary is cut there,
as the segmenter already cuts speech longer than max_segment_s.
"""
from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from core.analysis import quality
from core.media.audio import (SAMPLE_RATE, AudioError, decode_blocks, default_roles, probe_duration,
                        sha256_of, shortfall)
from core.base.types import ChannelQuality, SessionMeta, SessionResult
from ingest.options import IngestOptions
from ingest.vad import speech_spans

LONG_FILE_S = 20 * 60.0
BLOCK_S = 300.0
SILENT_PEAK = 1e-4  # a block of digital silence needs no voice activity detection
_STEP = 1 << 18

Skip = Callable[[str], bool]  # sha256 → already stored?


@dataclass
class Part:
    """One stretch of a file with its speech found: what the model needs, and what assemble
    keeps once the model has run (spans and their quality; the samples are released)."""
    offset_s: float  # where the stretch starts in the file
    spans: list[tuple[int, float, float]]  # (channel, start_s, end_s) within the stretch
    quality: list[tuple[float, float, tuple[str, ...]]]  # rms, clip ratio, flags per span
    audio: np.ndarray | None  # every span's samples end to end: one buffer, one message
    bounds: np.ndarray  # (len(spans) + 1,) sample offsets of the spans in `audio`

    @property
    def waves(self) -> list[np.ndarray]:
        b = self.bounds.tolist()
        return [self.audio[lo:hi] for lo, hi in zip(b[:-1], b[1:])]

    @property
    def speech_s(self) -> float:
        return float(self.bounds[-1]) / SAMPLE_RATE

    def release(self) -> None:
        self.audio = None


@dataclass
class Prepared:
    """A file before the model: who it is and, once decoded, its shape and quality."""
    path: Path
    sha256: str
    meta: SessionMeta
    result: SessionResult | None = None  # set when the file already failed
    skipped: bool = False  # already stored (the writer's answer)
    parts: list[Part] = field(default_factory=list)  # filled by prepare(), not prepare_stream()
    duration_s: float = 0.0
    roles: tuple[str, ...] = ()
    channels: tuple[ChannelQuality, ...] = ()
    codec: str | None = None
    rate: int | None = None
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # why a flag was set, for the run's output
    timings: dict = field(default_factory=dict)

    def fail(self, reason: str) -> "Prepared":
        self.result = SessionResult.failed(self.path, self.sha256, self.meta, reason)
        return self


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


@dataclass(frozen=True)
class PrepareTask:
    """`prepare_stream` with the run's options and known audio, as the streaming executor sends
    it to each prepare process once (the options and hashes travel once, not per file)."""
    opts: IngestOptions
    skip: Skip | None = None

    def __call__(self, path: Path, meta: SessionMeta) -> Iterator["Part | Prepared"]:
        return prepare_stream(path, meta, self.opts, self.skip)


def unreadable(path: Path, e: OSError) -> str:
    """Why a file could not even be opened, in words."""
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(e, FileNotFoundError):
        return "dangling link (its target is missing)" if path.is_symlink() else "file not found"
    if isinstance(e, IsADirectoryError):
        return "a folder, not a file"
    return f"unreadable: {e.strerror or type(e).__name__}"


def prepare(path: Path, meta: SessionMeta, opts: IngestOptions,
            skip: Skip | None = None) -> Prepared:
    """The whole of `prepare_stream` at once: the summary with every part in `.parts`."""
    parts = []
    for item in prepare_stream(path, meta, opts, skip):
        if isinstance(item, Part):
            parts.append(item)
        else:
            item.parts = parts
            return item
    raise AssertionError("prepare_stream ends with its summary")


def prepare_stream(path: Path, meta: SessionMeta, opts: IngestOptions,
                   skip: Skip | None = None) -> Iterator[Part | Prepared]:
    """Parts of `path` with speech, then its `Prepared` summary (always last, always there).

    `skip(sha256)` True: the file is already stored and is not decoded. A file that cannot be
    analysed ends with a summary whose `result` is failed, with the reason.
    """
    t0 = time.perf_counter()
    prep = _identified(Path(path), meta)
    if prep.result is None and not _skipped_if_stored(prep, skip):
        prep.timings["decode"] += time.perf_counter() - t0  # hashing reads the file: decode
        try:
            stream = _Stream(prep, opts)
            yield from stream.blocks_analysed()
            yield from stream.held_analysed()
            _summarised(prep, stream)
        except _Failed as e:
            prep.fail(e.reason)
    yield prep


class _Failed(Exception):
    """The file cannot be analysed; `reason` ends up in its failed result."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _identified(path: Path, meta: SessionMeta) -> Prepared:
    """The file named by its content's hash; failed when it cannot be read (nothing to
    identify it by, so it is reported but not stored)."""
    try:
        sha = sha256_of(path)
    except OSError as e:
        return Prepared(path, "", meta).fail(unreadable(path, e))
    return Prepared(path, sha, meta, timings={"decode": 0.0, "vad": 0.0})


def _skipped_if_stored(prep: Prepared, skip: Skip | None) -> bool:
    prep.skipped = skip is not None and bool(skip(prep.sha256))
    return prep.skipped


class _Stream:
    """One file decoded block by block, in one of three modes: a clip for predict
    (`whole_clip`: held whole, downmixed, no speech detection), a file held until it proves
    longer than LONG_FILE_S (then analysed whole), or block by block (a long file)."""

    def __init__(self, prep: Prepared, opts: IngestOptions):
        self.prep, self.opts, self.timings = prep, opts, prep.timings
        self.info: dict = {}  # codec, rate, truncation: filled by the decoder
        self.stats: list[_Channel] = []
        self.held: list[np.ndarray] = []
        self.held_n = self.offset_n = self.n_parts = 0
        # A container that states a long duration goes block by block from the start; any other
        # is held until it proves long (a zeroed or missing duration cannot make it decode whole).
        stated = None if opts.whole_clip else probe_duration(prep.path)
        self.by_block = stated is not None and stated > LONG_FILE_S

    def blocks_analysed(self) -> Iterator[Part]:
        """Decode every block; analyse each as it comes once the file goes block by block."""
        blocks = decode_blocks(self.prep.path, BLOCK_S, info=self.info)
        try:
            while True:
                t = time.perf_counter()
                block = next(blocks, None)
                self.timings["decode"] += time.perf_counter() - t
                if block is None:
                    return
                if not self.stats:
                    self._channels(block.shape[0])
                if not self._held(block):
                    yield from self._analysed(self.held or [block])
                del block  # not kept while the next block decodes
        except AudioError as e:
            raise _Failed(str(e)) from None

    def _channels(self, n_ch: int) -> None:
        """Speaker roles and running totals, once the first block says how many channels."""
        roles = _roles(self.prep.meta, self.opts, n_ch)
        if len(roles) != n_ch:
            raise _Failed(f"{len(roles)} speaker roles given for {n_ch} channels")
        self.prep.roles = roles
        self.stats = [_Channel() for _ in roles]

    def _held(self, block: np.ndarray) -> bool:
        """Hold `block` while the file may still be analysed whole; False once it goes (or
        has gone) block by block."""
        if self.by_block:
            return False
        self.held.append(block)
        self.held_n += block.shape[1]
        if self.held_n <= LONG_FILE_S * SAMPLE_RATE:
            return True
        if self.opts.whole_clip:
            raise _Failed(f"longer than {LONG_FILE_S / 60:.0f} minutes: too long to analyse "
                          "as one clip (ingest it instead)")
        self.by_block = True  # longer than the container said: go on block by block
        return False

    def _analysed(self, blocks: list[np.ndarray]) -> Iterator[Part]:
        for b in blocks:
            part = _part(b, self.offset_n, self.opts, self.stats, self.timings)
            self.offset_n += b.shape[1]
            if part is not None:
                self.n_parts += 1
                yield part
        self.held, self.held_n = [], 0

    def held_analysed(self) -> Iterator[Part]:
        """What is still held at the end: the whole file (for predict, the clip downmixed)."""
        if not self.held:
            return
        whole = self.held[0] if len(self.held) == 1 else np.concatenate(self.held, axis=1)
        self.held = []
        if self.opts.whole_clip:  # predict: one segment, no speech detection
            part = _whole_clip(whole, self.stats, self.timings)
            self.prep.roles = ("speaker",)
            self.stats = self.stats[:1]
        else:
            part = _part(whole, 0, self.opts, self.stats, self.timings)
        self.offset_n = whole.shape[1]
        del whole
        if part is not None:
            self.n_parts += 1
            yield part


def _summarised(prep: Prepared, stream: _Stream) -> None:
    """Duration, channel quality, codec and truncation on the summary; failed when there was
    no audio, or no speech in it."""
    if not stream.offset_n:
        raise _Failed("no audio frames could be decoded")
    prep.duration_s = stream.offset_n / SAMPLE_RATE
    prep.channels = tuple(s.quality(ch, prep.roles[ch]) for ch, s in enumerate(stream.stats))
    prep.codec, prep.rate = stream.info.get("codec"), stream.info.get("rate")
    cut = shortfall(stream.info, prep.duration_s)
    if cut:
        prep.flags, prep.notes = ("truncated",), (cut,)
    if not stream.n_parts:
        loudest = max(c.rms for c in prep.channels)
        raise _Failed(f"no speech found (silent or too quiet: RMS {loudest:.4f})")


def _roles(meta: SessionMeta, opts: IngestOptions, n_ch: int) -> tuple[str, ...]:
    return tuple(meta.roles or (opts.stereo_roles if n_ch == 2 else default_roles(n_ch)))


def _part(block: np.ndarray, offset_n: int, opts: IngestOptions, stats: list[_Channel],
          timings: dict) -> Part | None:
    """Speech of one stretch (channels × samples), its quality added to the channel totals."""
    t = time.perf_counter()
    spans = []
    for ch, x in enumerate(block):
        silent = max(float(x.max()), -float(x.min())) < SILENT_PEAK
        found = [] if silent else speech_spans(x, opts)
        stats[ch].add(x, sum(e - s for s, e in found))
        spans.extend((ch, s, e) for s, e in found)
    part = part_of(block, spans, offset_n) if spans else None
    timings["vad"] += time.perf_counter() - t
    return part


def part_of(samples: np.ndarray, spans: list[tuple[int, float, float]],
            offset_n: int = 0) -> Part:
    """The Part of a stretch (channels × samples) given its speech spans (channel, start_s,
    end_s): spans in time order, their samples packed end to end, each span's quality."""
    spans = sorted(spans, key=lambda s: (s[1], s[0]))
    cuts = [(ch, int(s * SAMPLE_RATE), int(e * SAMPLE_RATE)) for ch, s, e in spans]
    bounds = np.concatenate([[0], np.cumsum([hi - lo for _, lo, hi in cuts])]).astype(np.int64)
    audio = np.empty(int(bounds[-1]), np.float32)
    marks = []
    for (ch, lo, hi), at in zip(cuts, bounds[:-1].tolist()):
        seg = audio[at:at + hi - lo]
        seg[:] = samples[ch, lo:hi]
        marks.append(quality.measure(seg, SAMPLE_RATE))
    return Part(offset_n / SAMPLE_RATE, spans, marks, audio, bounds)


def _whole_clip(samples: np.ndarray, stats: list[_Channel], timings: dict) -> Part:
    t = time.perf_counter()
    mix = np.ascontiguousarray(samples.mean(axis=0), dtype=np.float32)
    stats[0] = _Channel()
    stats[0].add(mix, mix.size / SAMPLE_RATE)
    end = mix.size / SAMPLE_RATE
    part = Part(0.0, [(0, 0.0, end)], [quality.measure(mix, SAMPLE_RATE)], mix,
                np.array([0, mix.size], np.int64))
    timings["vad"] += time.perf_counter() - t
    return part
