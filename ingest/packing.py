"""One batch as the device sees it: laid out on the host from the lengths alone, shipped in
one copy, normalised on the device.

The host knows every shape of a batch before any waveform reaches the device: the stream
offsets, each segment's frame count (the conv formula), where each frame and extra token sits
in the packed token sequence. `Layout` computes all of it with a few vectorised numpy calls
(no per-segment tensor work), and `ship` writes the raw waveforms and those index arrays into
ONE host buffer (pinned on CUDA) that reaches the device in one non-blocking copy. Nothing in
the forward then needs a device→host sync (no `nonzero`, no boolean indexing): the host can
queue the next batch while the device still works on this one.

FunASR normalises each waveform over its own length (`F.layer_norm(x, x.shape)`); `normalise`
does the same for every segment of the stream at once on the device: the stream is viewed as
rows of one stride (320 samples), each row belongs to one segment, and the per-segment mean and
variance are two-level sums (rows, then segments) in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LN_EPS = 1e-5  # F.layer_norm's default, which FunASR's waveform normalisation uses


def conv_frames_np(n: np.ndarray, specs) -> np.ndarray:
    """`conv_frames` over an array of lengths."""
    n = np.asarray(n, np.int64)
    for _, k, s in specs:
        n = np.where(n < k, 0, (n - k) // s + 1)
    return n


def _starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _ramp(counts: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Concatenation of `base[i] + arange(counts[i])` over i, without a Python loop."""
    total = int(counts.sum())
    return np.repeat(base - _starts(counts), counts) + np.arange(total, dtype=np.int64)


@dataclass
class Layout:
    """Where every sample, frame and token of a batch sits (host-side, numpy int64).

    Stream: segment i occupies samples [offsets[i], offsets[i] + n_samples[i]) of a stream
    whose segments start on multiples of `stride`. Frames (N in all) are packed segment after
    segment; tokens (the E extra tokens then the frames of each segment) likewise, padded with
    tokens of a dummy segment B up to a multiple of `token_block`.
    """
    n_samples: np.ndarray  # (B,)
    n_frames: np.ndarray  # (B,)
    offsets: np.ndarray  # (B,) first sample of each segment in the stream
    stride: int
    extra: int  # E, extra tokens in front of each segment
    stream_len: int  # L, a multiple of stride
    n_tokens: int  # E·B + N, before padding
    n_tokens_padded: int
    arrays: dict  # name → int64 array, shipped to the device (see `of`)

    @property
    def B(self) -> int:
        return int(self.n_samples.shape[0])

    @property
    def N(self) -> int:
        return int(self.n_frames.sum())

    @property
    def T(self) -> int:
        """Longest segment, in frames."""
        return int(self.n_frames.max())

    @property
    def token_spans(self) -> list[tuple[int, int]]:
        """[start, end) of each segment's tokens (extra tokens included)."""
        counts = self.extra + self.n_frames
        ends = np.cumsum(counts)
        return list(zip((ends - counts).tolist(), ends.tolist()))

    @classmethod
    def of(cls, lengths, specs, extra: int, token_block: int = 1) -> "Layout":
        """The layout of segments of `lengths` samples for a conv extractor of `specs`."""
        n = np.asarray(lengths, np.int64)
        B = n.shape[0]
        S = int(np.prod([s for _, _, s in specs]))
        f = conv_frames_np(n, specs)
        padded = -(-n // S) * S
        offsets = _starts(padded)
        L = int(padded.sum())
        E = int(extra)
        T = int(f.max())
        c = E + f  # tokens per segment
        tstart = _starts(c)
        n_tok = int(c.sum())
        n_pad = -(-n_tok // token_block) * token_block
        seg = np.arange(B, dtype=np.int64)
        rows = padded // S
        row_seg = np.repeat(seg, rows)
        row_valid = np.clip(n[row_seg] - S * _ramp(rows, np.zeros(B, np.int64)), 0, S)
        frame_tok = _ramp(f, tstart + E)
        tok_frame = np.zeros(n_pad, np.int64)
        tok_frame[frame_tok] = 1
        arrays = {
            "n_samples": n,
            "n_frames": f,
            # extractor frame (of the whole stream) behind each packed frame
            "frame_src": _ramp(f, offsets // S),
            "frame_seg": np.repeat(seg, f),
            # position of each frame in a zero-padded (B, T) grid (positional convolution)
            "frame_grid": _ramp(f, seg * T),
            "frame_tok": frame_tok,
            "extra_tok": (tstart[:, None] + np.arange(E, dtype=np.int64)[None, :]).reshape(-1),
            "tok_doc": np.concatenate([np.repeat(seg, c),
                                       np.full(n_pad - n_tok, B, np.int64)]),
            "tok_frame": tok_frame,
            # position of each (unpadded) token in a (B, E + T) grid (padded attention)
            "tok_grid": _ramp(c, seg * (E + T)),
            "row_seg": row_seg,
            "row_valid": row_valid,
        }
        return cls(n, f, offsets, S, E, L, n_tok, n_pad, arrays)


@dataclass
class DeviceBatch:
    """A shipped batch: the raw stream and the layout's index arrays, on the device."""
    layout: Layout
    raw: torch.Tensor  # (L,) float32, unnormalised; gaps hold anything (never read unmasked)
    idx: dict  # name → int64 tensor on the device
    stream: torch.Tensor | None = None  # (L,) normalised (set by `normalise`)

    @property
    def device(self) -> torch.device:
        return self.raw.device


def ship(waves: list[np.ndarray], layout: Layout, device: torch.device,
         pin: bool = False) -> DeviceBatch:
    """Waveforms and index arrays in one host buffer, one (non-blocking) copy to `device`.

    Gaps between segments are not cleared on the host: `normalise` masks them on the device."""
    L = layout.stream_len
    names = list(layout.arrays)
    sizes = [layout.arrays[k].size for k in names]
    head = -(-4 * L // 8) * 8  # float32 stream, then int64 arrays on an 8-byte boundary
    buf = torch.empty(head + 8 * sum(sizes), dtype=torch.uint8, pin_memory=pin)
    flat = buf.numpy()
    stream = flat[:4 * L].view(np.float32)
    for w, o in zip(waves, layout.offsets.tolist()):
        stream[o:o + w.shape[0]] = w
    ints = flat[head:].view(np.int64)
    at = 0
    for k, size in zip(names, sizes):
        ints[at:at + size] = layout.arrays[k]
        at += size
    dev = buf.to(device, non_blocking=pin)
    raw = dev[:4 * L].view(torch.float32)
    allints = dev[head:].view(torch.int64)
    idx, at = {}, 0
    for k, size in zip(names, sizes):
        idx[k] = allints[at:at + size]
        at += size
    return DeviceBatch(layout, raw, idx)


def normalise(batch: DeviceBatch, enabled: bool = True, eps: float = LN_EPS) -> torch.Tensor:
    """Each segment of the stream layer-normalised over its own samples (FunASR's
    `F.layer_norm(x, x.shape)`), gaps zeroed; sets and returns `batch.stream`."""
    lay, idx = batch.layout, batch.idx
    S, B = lay.stride, lay.B
    X = batch.raw.view(-1, S)  # (R, S): every row inside one segment's padded span
    seg, valid_n = idx["row_seg"], idx["row_valid"]
    mask = torch.arange(S, device=X.device)[None, :] < valid_n[:, None]
    x = torch.where(mask, X, X.new_zeros(()))
    if enabled:
        n = idx["n_samples"].to(torch.float64)
        sums = torch.zeros(B, dtype=torch.float64, device=X.device)
        mean = sums.index_add_(0, seg, x.sum(1, dtype=torch.float64)) / n
        x = torch.where(mask, x - mean.to(x.dtype)[seg][:, None], x.new_zeros(()))
        sq = torch.zeros(B, dtype=torch.float64, device=X.device)
        var = sq.index_add_(0, seg, (x * x).sum(1, dtype=torch.float64)) / n
        x = x * torch.rsqrt(var + eps).to(x.dtype)[seg][:, None]
    batch.stream = x.view(-1)
    return batch.stream
