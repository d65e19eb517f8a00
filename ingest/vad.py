"""Speech segments per channel: silero-vad's model (the ONNX file in its wheel), then our
shaping rules.

Torch-free, so prepare processes never load torch: the `silero_vad` package imports torch at
import time, even for its ONNX sequence path. So this module opens the wheel's sequence ONNX
export with onnxruntime itself and turns the per-frame probabilities into speech spans with the
same state machine as silero's `get_speech_timestamps_from_probs` (for an unbounded maximum
speech length, which is how it is called here). `tests/test_vad.py` holds both to the same
spans as `silero_vad.get_speech_timestamps_sequence`.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from core.media.audio import SAMPLE_RATE
from ingest.options import IngestOptions

_FRAME = SAMPLE_RATE // 50  # 20 ms energy frames for finding the quietest split point
_VAD_FRAME = 512  # silero's frame at 16 kHz (32 ms), with 64 samples of context before it
_VAD_CONTEXT = 64
_MAX_FRAMES = 512  # frames per ONNX call (~16 s)


def model_path() -> Path:
    """The sequence ONNX model shipped in the silero-vad wheel, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad_16k_sequence.onnx"


@functools.lru_cache(maxsize=1)
def _session():
    # One ONNX call per ~16 s block gives the streaming model's exact probabilities without a
    # Python loop per 32 ms frame, and onnxruntime releases the GIL while it runs.
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model_path()), sess_options=options,
                                providers=["CPUExecutionProvider"])


def probabilities(x: np.ndarray) -> np.ndarray:
    """Speech probability of every 32 ms frame of a 16 kHz channel (silero's sequence model)."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    n_frames = -(-x.size // _VAD_FRAME)
    session = _session()
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    context = np.zeros(_VAD_CONTEXT, np.float32)
    out = []
    for first in range(0, n_frames, _MAX_FRAMES):
        k = min(_MAX_FRAMES, n_frames - first)
        frames = np.zeros((k, _VAD_FRAME), np.float32)
        chunk = x[first * _VAD_FRAME:(first + k) * _VAD_FRAME]
        frames.reshape(-1)[:chunk.size] = chunk
        ctx = np.empty((k, _VAD_CONTEXT), np.float32)
        ctx[0] = context
        ctx[1:] = frames[:-1, -_VAD_CONTEXT:]
        context = frames[-1, -_VAD_CONTEXT:].copy()
        probs, h, c = session.run(["speech_probs", "hn", "cn"],
                                  {"input": np.concatenate([ctx, frames], axis=1), "h": h, "c": c})
        out.append(probs.reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def timestamps(probs: np.ndarray, n_samples: int, threshold: float, min_speech_ms: int,
               min_silence_ms: int, pad_ms: int) -> list[tuple[int, int]]:
    """(start, end) samples of speech: silero's state machine with no maximum speech length."""
    sr = SAMPLE_RATE
    min_speech = sr * min_speech_ms / 1000
    min_silence = sr * min_silence_ms / 1000
    pad = sr * pad_ms / 1000
    neg_threshold = max(threshold - 0.15, 0.01)
    speeches: list[list[float]] = []
    start = None
    temp_end = 0
    for i, p in enumerate(probs.tolist()):
        at = _VAD_FRAME * i
        if p >= threshold and temp_end:
            temp_end = 0
        if p >= threshold and start is None:
            start = at
            continue
        if p < neg_threshold and start is not None:
            if not temp_end:
                temp_end = at
            if at - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                speeches.append([start, temp_end])
            start, temp_end = None, 0
    if start is not None and n_samples - start > min_speech:
        speeches.append([start, n_samples])
    for i, sp in enumerate(speeches):  # padding, shared out where the gap is short
        if i == 0:
            sp[0] = int(max(0, sp[0] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1][0] - sp[1]
            if gap < 2 * pad:
                sp[1] += int(gap // 2)
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - gap // 2))
            else:
                sp[1] = int(min(n_samples, sp[1] + pad))
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - pad))
        else:
            sp[1] = int(min(n_samples, sp[1] + pad))
    return [(int(s), int(e)) for s, e in speeches]


def speech_spans(x: np.ndarray, opts: IngestOptions) -> list[tuple[float, float]]:
    """(start_s, end_s) of speech in one 16 kHz channel, merged, split and filtered."""
    if x.size < SAMPLE_RATE // 10:
        return []
    return shape(timestamps(probabilities(x), x.size, opts.vad_threshold,
                            int(opts.min_segment_s * 1000), int(opts.merge_gap_s * 1000),
                            int(opts.speech_pad_s * 1000)), x, opts)


def shape(raw: list[tuple[int, int]], x: np.ndarray,
          opts: IngestOptions) -> list[tuple[float, float]]:
    """Speech timestamps (samples) → our segments: merged, long ones split, blips dropped."""
    spans = [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in raw]
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
        probs, h, c = _session().run(["speech_probs", "hn", "cn"],
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
            if len(self._probs) > 64:  # one piece per tick would be 7,200 pieces an hour
                self._probs = [np.concatenate(self._probs)]
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
        o = self.opts
        raw = timestamps(self.probs(x, n) if final else self.probs(), n, o.vad_threshold,
                         int(o.min_segment_s * 1000), int(o.merge_gap_s * 1000),
                         int(o.speech_pad_s * 1000))
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
