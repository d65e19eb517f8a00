"""Speech segments per channel: silero-vad (weights ship in its wheel), then our shaping rules."""
from __future__ import annotations

import functools

import numpy as np

from core.audio import SAMPLE_RATE
from ingest.options import IngestOptions

_FRAME = SAMPLE_RATE // 50  # 20 ms energy frames for finding the quietest split point


@functools.lru_cache(maxsize=1)
def _model():
    # The sequence ONNX export gives the streaming model's exact probabilities from a few
    # block-level calls instead of a Python loop per 32 ms frame (about 6x faster here), and
    # releases the GIL, so VAD on the prefetch thread overlaps inference.
    from silero_vad import load_silero_vad
    return load_silero_vad(sequence=True)


def speech_spans(x: np.ndarray, opts: IngestOptions) -> list[tuple[float, float]]:
    """(start_s, end_s) of speech in one 16 kHz channel, merged, split and filtered."""
    if x.size < SAMPLE_RATE // 10:
        return []
    from silero_vad import get_speech_timestamps_sequence
    raw = get_speech_timestamps_sequence(
        np.ascontiguousarray(x, dtype=np.float32), _model(),
        sampling_rate=SAMPLE_RATE, threshold=opts.vad_threshold,
        min_speech_duration_ms=int(opts.min_segment_s * 1000),
        min_silence_duration_ms=int(opts.merge_gap_s * 1000),
        speech_pad_ms=int(opts.speech_pad_s * 1000))
    return shape(raw, x, opts)


def shape(raw: list[dict], x: np.ndarray, opts: IngestOptions) -> list[tuple[float, float]]:
    """silero's timestamps (samples) → our segments: merged, long ones split, blips dropped."""
    spans = [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in raw]
    spans = merge(spans, opts.merge_gap_s)
    out: list[tuple[float, float]] = []
    for s, e in spans:
        out.extend(split_long(x, s, e, opts.max_segment_s))
    return [(s, e) for s, e in out if e - s >= opts.min_segment_s]


def merge(spans: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(spans):
        if out and s - out[-1][1] < gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def split_long(x: np.ndarray, start: float, end: float, max_s: float) -> list[tuple[float, float]]:
    """Split [start, end) into pieces ≤ max_s, each cut at the quietest 20 ms frame it can use."""
    pieces = []
    while end - start > max_s:
        # Search the second half of the allowed window so no piece ends up tiny.
        lo = int((start + max_s / 2) * SAMPLE_RATE) // _FRAME
        hi = int((start + max_s) * SAMPLE_RATE) // _FRAME
        frames = x[lo * _FRAME:hi * _FRAME].reshape(-1, _FRAME)
        cut = (lo + int(np.argmin(np.mean(frames ** 2, axis=1)))) * _FRAME / SAMPLE_RATE
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


class VadStream:
    """`speech_spans` for audio that arrives piece by piece (live streams).

    silero's probabilities are causal: carrying its LSTM state and 64-sample context from one
    512-sample frame to the next gives, frame for frame, the numbers a pass over the whole
    signal gives. Timestamps and shaping then run over all probabilities so far (about 15 ms
    for an hour), so `spans(x, final=True)` equals `speech_spans(x, opts)` exactly, and
    `closed(...)` lists the segments no later audio can change.
    """

    FRAME, CONTEXT = 512, 64

    def __init__(self, opts: IngestOptions):
        self.opts = opts
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._ctx = np.zeros(self.CONTEXT, np.float32)
        self._probs: list[np.ndarray] = []
        self.done = 0  # samples consumed as whole frames

    def _run(self, frames: np.ndarray, h, c, ctx):
        contexts = np.empty((frames.shape[0], self.CONTEXT), np.float32)
        contexts[0] = ctx
        contexts[1:] = frames[:-1, -self.CONTEXT:]
        block = np.concatenate([contexts, frames], axis=1)
        probs, h, c = _model().session.run(["speech_probs", "hn", "cn"],
                                           {"input": block, "h": h, "c": c})
        return probs.reshape(-1), h, c

    def feed(self, x: np.ndarray, n: int) -> None:
        """Take the whole frames of x[:n] not seen yet (x: the stream so far, 16 kHz)."""
        whole = (n - self.done) // self.FRAME
        for start in range(0, whole, 512):  # ONNX calls of at most 512 frames, like silero's
            k = min(512, whole - start)
            a = self.done
            frames = np.ascontiguousarray(x[a:a + k * self.FRAME], np.float32).reshape(k, -1)
            probs, self._h, self._c = self._run(frames, self._h, self._c, self._ctx)
            self._probs.append(probs)
            self._ctx = frames[-1, -self.CONTEXT:].copy()
            self.done += k * self.FRAME

    def probs(self, x: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
        """Probabilities so far; with (x, n), plus the zero-padded last partial frame as a whole
        pass would compute it (state left untouched)."""
        out = np.concatenate(self._probs) if self._probs else np.zeros(0, np.float32)
        if x is not None and n is not None and n > self.done:
            frame = np.zeros((1, self.FRAME), np.float32)
            frame[0, :n - self.done] = x[self.done:n]
            tail, _, _ = self._run(frame, self._h, self._c, self._ctx)
            out = np.concatenate([out, tail])
        return out

    def spans(self, x: np.ndarray, n: int, final: bool = False) -> list[tuple[float, float]]:
        """Segments of x[:n]; live (final=False) the audio counted ends at the last whole frame,
        and speech still under way ends there."""
        if final:
            self.feed(x, n)  # whole frames not seen yet; the partial last one is added below
        else:
            n = self.done
        if n < SAMPLE_RATE // 10:
            return []
        from silero_vad.utils_vad import get_speech_timestamps_from_probs
        o = self.opts
        raw = get_speech_timestamps_from_probs(
            self.probs(x, n) if final else self.probs(), sampling_rate=SAMPLE_RATE,
            threshold=o.vad_threshold, min_speech_duration_ms=int(o.min_segment_s * 1000),
            min_silence_duration_ms=int(o.merge_gap_s * 1000),
            speech_pad_ms=int(o.speech_pad_s * 1000), audio_length_samples=n)
        return shape(raw, x[:n], self.opts)

    def closed(self, spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
        """The live spans that later audio cannot change. Speech that starts after a span can
        join it only if its padded start comes within the merge gap of the span's end; speech
        shorter than min_segment_s at the live end is not listed yet, so the span must end that
        much (plus padding, gap and two frames of slack) before the last frame seen."""
        o = self.opts
        guard = o.merge_gap_s + o.speech_pad_s + o.min_segment_s + 2 * self.FRAME / SAMPLE_RATE
        frontier = self.done / SAMPLE_RATE
        return [(s, e) for s, e in spans if e + guard <= frontier]

    def speaking(self, since_s: float) -> bool:
        """Whether any frame after `since_s` reached the speech threshold."""
        probs = self.probs()
        first = int(since_s * SAMPLE_RATE) // self.FRAME
        return bool((probs[first:] >= self.opts.vad_threshold).any())
