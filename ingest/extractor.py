"""FunASR's conv feature extractor (7 × conv → Fp32LayerNorm over channels → GELU) on one stream.

All its convolutions are valid (unpadded), so stream frames [f0, f1) are exactly the output of
stream samples [S·f0, S·(f1-1) + R) (S: total stride, R: receptive field). The stream is run in
windows of `window_frames`: memory stays bounded whatever the batch. Activations are kept in a
(time, channel) layout throughout, so the layer norms over channels need no transposes.

Two ways to run a layer with several input channels:

* "gemm": the convolution as GEMMs on strided views of the input (taps in groups of at most
  the stride, so the views' rows do not overlap and BLAS reads them in place, no im2col);
  on CPU the first two layers (the widest activations) also run in short windows whose
  activations stay in cache;
* "cudnn": `conv2d` on a (1, C, 1, T) channels-last view of the same memory, which cuDNN runs
  as native NHWC tensor-core kernels in bf16.

The first layer (one input channel, kernel 10 over stride 5) is a small im2col GEMM either way.
The conv weights are re-laid out (and cast to the compute dtype) once, and remade if FunASR's
weight tensor is replaced or modified in place.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_frames(n: int, specs) -> int:
    """Frames the conv feature extractor makes from `n` samples (FunASR's formula)."""
    for _, k, s in specs:
        if n < k:
            return 0
        n = (n - k) // s + 1
    return n


def receptive(specs) -> int:
    r = 1
    for _, k, s in reversed(specs):
        r = (r - 1) * s + k
    return r


def windowable(specs) -> bool:
    """Whether W output frames come from exactly stride·(W-1) + receptive inputs."""
    S, R = math.prod(s for _, _, s in specs), receptive(specs)
    return all(conv_frames(S * (w - 1) + R, specs) == w for w in (1, 2, 3, 7, 100, 101)) \
        and all(conv_frames(S * (w - 1) + R + S - 1, specs) == w for w in (1, 2, 7))


def ln_gelu(x, w, b, eps: float):
    """The extractor's Fp32LayerNorm over channels, then exact GELU. In bf16 the kernel
    still reduces in float32 and rounds once on output, as Fp32LayerNorm's `.type_as` does
    (its float32 parameters are the engine's bf16 copy here)."""
    y = F.layer_norm(x, (x.shape[-1],), w, b, eps)
    return torch.ops.aten.gelu_(y)  # in place: layer_norm always returns a fresh tensor


def conv_tc(x: torch.Tensor, taps: list[torch.Tensor], k: int, s: int) -> torch.Tensor:
    """Valid 1-D convolution (no bias) on a (T, C) or (T,) stream as GEMMs → (T_out, C_out).

    `taps` come from `conv_taps`. Taps are taken in groups of at most `s`: each group is a
    strided view of the input whose rows do not overlap, so BLAS reads it in place with no
    im2col copy (the first layer, with one input channel, takes one small im2col instead).
    """
    if x.dim() == 1:
        x = x.unsqueeze(1)
    x = x.contiguous()
    T, C = x.shape
    n = (T - k) // s + 1
    if len(taps) == 1 and k > s:  # im2col: rows of k samples overlap
        cols = x.as_strided((n, k * C), (s * C, 1)).contiguous()
        return F.linear(cols, taps[0])
    out = None
    for g, w in enumerate(taps):
        j = g * s
        width = w.shape[1] // C
        view = x.as_strided((n, width * C), (s * C, 1), x.storage_offset() + j * C)
        out = F.linear(view, w) if out is None else out.addmm_(view, w.t())
    return out


def conv_taps(w: torch.Tensor, s: int) -> list[torch.Tensor]:
    """A (C_out, C_in, k) conv weight re-laid out for `conv_tc`: one (C_out, width·C_in)
    matrix per group of ≤ s taps, tap-major; a single (C_out, k) matrix when C_in is 1."""
    cout, cin, k = w.shape
    if cin == 1:
        return [w.reshape(cout, k)]
    return [w[:, :, j:j + s].permute(0, 2, 1).reshape(cout, -1).contiguous()
            for j in range(0, k, s)]


def conv_nhwc(x: torch.Tensor, w4: torch.Tensor, s: int) -> torch.Tensor:
    """Valid strided convolution of a (T, C) activation through `conv2d` on the same memory
    seen as (1, C, 1, T) channels-last; returns (T_out, C_out), again (time, channel)."""
    x4 = x.contiguous().t()[None, :, None, :]  # (1, C, 1, T), channels-last strides
    y = F.conv2d(x4, w4, stride=(1, s))  # (1, C_out, 1, T_out)
    return y[0, :, 0, :].t().contiguous()  # a view when cuDNN kept channels-last


class ConvExtractor:
    """The extractor layers of a FunASR model, run on a 1-D stream."""

    def __init__(self, layers: list[tuple[nn.Conv1d, nn.Module]], specs,
                 dtype: torch.dtype = torch.float32, mode: str = "gemm",
                 window_frames: int = 1000, head_frames: int = 1024):
        if mode not in ("gemm", "cudnn"):
            raise ValueError(f"extractor must be auto, gemm or cudnn, not {mode!r}")
        self.convs = [conv for conv, _ in layers]
        self.norms = [ln for _, ln in layers]
        self.specs = [tuple(int(v) for v in s) for s in specs]
        self.stride = math.prod(s for _, _, s in self.specs)
        self.receptive = receptive(self.specs)
        self.windowed = windowable(self.specs)  # windows need the formula to agree
        self.dtype, self.mode = dtype, mode
        self.window_frames = window_frames  # stream window, in final frames
        # CPU: the first two layers in windows of `head_frames` of their output (~0.6 s)
        self.head_frames = head_frames
        self.n_head = 2 if len(self.specs) > 2 and windowable(self.specs[:2]) else 0
        self.ln_gelu = ln_gelu  # torch.compile may replace it
        self._cache: dict = {}

    def frames(self, n: int) -> int:
        return conv_frames(n, self.specs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(L,) normalised stream in the compute dtype → (frames of the stream, C)."""
        S, R = self.stride, self.receptive
        total = self.frames(x.shape[0])
        if self.windowed:
            W = max(1, self.window_frames)
            pieces = [x[S * f0:S * (min(total, f0 + W) - 1) + R] for f0 in range(0, total, W)]
        else:
            pieces = [x]
        outs = []
        for y in pieces:
            first = 0
            if self.head_frames and self.n_head and self.windowed:
                y, first = self._head(y), self.n_head
            for i in range(first, len(self.specs)):
                y = self._layer(y, i)
            outs.append(y)
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The first layers (3,200 and 1,600 frames a second) in short windows whose
        activations stay in cache; exact for the same reason as the stream windows."""
        specs = self.specs[:self.n_head]
        S, R = math.prod(s for _, _, s in specs), receptive(specs)
        W = self.head_frames
        total = conv_frames(x.shape[0], specs)
        outs = []
        for f0 in range(0, total, W):
            y = x[S * f0:S * (min(total, f0 + W) - 1) + R]
            for i in range(self.n_head):
                y = self._layer(y, i)
            outs.append(y)
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _layer(self, y: torch.Tensor, i: int) -> torch.Tensor:
        _, k, s = self.specs[i]
        w = self._weights(i)
        y = conv_nhwc(y, w, s) if isinstance(w, torch.Tensor) else conv_tc(y, w, k, s)
        ln = self.norms[i]
        return self.ln_gelu(y, ln.weight, ln.bias, ln.eps)

    def _weights(self, i: int):
        """Layer i's weight in the compute dtype, laid out for its kernel: GEMM taps, or a
        (C_out, C_in, 1, k) channels-last tensor for cuDNN. Made once per weight version."""
        conv = self.convs[i]
        w = conv.weight
        key = (w.data_ptr(), w._version, w.device)
        hit = self._cache.get(i)
        if hit is None or hit[0] != key:
            w = w.detach()
            _, k, s = self.specs[i]
            if self.mode == "cudnn" and w.shape[1] > 1:
                made = w.unsqueeze(2).to(self.dtype).contiguous(
                    memory_format=torch.channels_last)
            else:
                made = [t.to(self.dtype) for t in conv_taps(w, s)]
            hit = self._cache[i] = (key, made)
        return hit[1]
