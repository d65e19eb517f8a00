"""Per-frame emotion curves: softmax of frame logits averaged over a short sliding window.

emotion2vec gives 50 frames a second; the head is linear, so the mean of the frame logits is
the utterance logit. Averaging logits over `window_s` before the softmax keeps a curve that
moves with the voice but is not as jumpy as single 20 ms frames.
"""
from __future__ import annotations

import numpy as np

FRAMES_PER_SECOND = 50
_NEG = -1e4  # stands in for -inf (masked labels) so running sums stay finite


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def pool(frame_logits: np.ndarray, start_s: float, hop_s: float = 0.1,
         window_s: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Times (N,) and probabilities (N, 9) for one segment's (T, 9) frame logits."""
    n_frames = frame_logits.shape[0]
    if n_frames == 0:
        return np.zeros(0), np.zeros((0, frame_logits.shape[1]), np.float32)
    logits = np.where(np.isfinite(frame_logits), frame_logits, _NEG).astype(np.float64)
    csum = np.vstack([np.zeros((1, logits.shape[1])), np.cumsum(logits, axis=0)])
    hop = max(1, round(hop_s * FRAMES_PER_SECOND))
    half = max(1, round(window_s * FRAMES_PER_SECOND)) // 2
    n = max(1, n_frames // hop)
    centers = (np.arange(n) * hop + hop / 2).astype(int).clip(0, n_frames - 1)
    lo = (centers - half).clip(0, n_frames)
    hi = (centers + half + 1).clip(0, n_frames)
    means = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    t = start_s + (centers + 0.5) / FRAMES_PER_SECOND
    return t, softmax(means).astype(np.float32)
