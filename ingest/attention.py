"""Multi-head attention with FunASR's ALiBi over packed tokens (N, 3C) → (N, C), three ways.

FunASR adds, per head h < num_alibi_heads, `-(slope_h · |i - j|) · scale_h` (learned scale,
clamped at zero, per layer or shared) between frames i and j, and nothing where either token is
one of the extra tokens in front. Tokens here are packed: each segment's extra tokens then its
frames, segment after segment, with no padding between segments.

* "varlen": one SDPA call per segment on its own rows with an explicit bias (CPU: no padding
  exists at all, exactly FunASR's arithmetic per segment);
* "padded": tokens scattered into a (B, H, E+T, hd) batch, one SDPA call with a float mask of
  the bias plus -inf on padded keys (materialises B·H·(E+T)² mask values);
* "flex": FlexAttention on the packed sequence, (1, H, N, hd): the bias is a `score_mod`
  computed inside the fused kernel and the segments are kept apart by a block-sparse mask
  built from the layout, so only blocks touching a segment's own tokens are ever computed and
  nothing of size N² (or B·T²) exists. Compiled (required for the fused kernel) on CUDA.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

FLEX_BLOCK = 128  # FlexAttention's block size; the packed token count is padded to it


def alibi_slopes(heads: int, alibi_heads: int) -> torch.Tensor:
    """FunASR's per-head ALiBi slopes (H,), zero for heads without ALiBi."""
    from funasr.models.emotion2vec.base import get_alibi
    slopes = torch.zeros(heads)
    if alibi_heads:
        slopes[:alibi_heads] = -get_alibi(2, alibi_heads)[:, 0, 1]  # bias(0, 1) = -slope
    return slopes


def alibi_scales(enc, heads: int) -> torch.Tensor:
    """The learned ALiBi scales (L or 1, H), clamped as FunASR does; 1 where there are none."""
    scale = getattr(enc, "alibi_scale", None)
    if scale is None:
        return torch.ones(1, heads)
    s = scale.detach().float().clamp_min(0)  # (L|1, 1, Ha|1, 1, 1)
    s = s.reshape(s.shape[0], -1).cpu()
    out = torch.ones(s.shape[0], heads)
    if s.shape[1] == 1:  # one scale for every head
        out[:] = s
    else:
        out[:, :s.shape[1]] = s
    return out


def explicit_bias(T: int, extra: int, slopes: torch.Tensor, scale: torch.Tensor,
                  device) -> torch.Tensor:
    """The float bias (1, H, E+T, E+T) FunASR adds to one segment of T frames (and to the
    top-left corner of any longer one): `(slope·(-|i-j|))·scale` among frames, 0 elsewhere."""
    i = torch.arange(T, device=device)
    dist = -(i[:, None] - i[None, :]).abs().to(torch.float32)
    H = slopes.shape[0]
    bias = torch.zeros(1, H, extra + T, extra + T, device=device)
    bias[0, :, extra:, extra:] = (slopes.to(device)[:, None, None] * dist) \
        * scale.to(device)[:, None, None]
    return bias


class VarlenSDPA:
    """One SDPA call per segment on its own tokens (no padding anywhere)."""

    def __init__(self, spans: list[tuple[int, int]], biases: list[torch.Tensor]):
        self.spans, self.biases = spans, biases  # biases: per layer, (1, H, Tmax, Tmax)

    def __call__(self, qkv: torch.Tensor, heads: int, layer: int) -> torch.Tensor:
        N, C3 = qkv.shape
        C = C3 // 3
        hd = C // heads
        out = qkv.new_empty(N, C)
        bias = self.biases[layer].to(qkv.dtype)
        for s, e in self.spans:
            q, k, v = qkv[s:e].view(e - s, 3, heads, hd).permute(1, 2, 0, 3)
            o = F.scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                               attn_mask=bias[..., :e - s, :e - s])
            out[s:e].view(e - s, heads, hd).copy_(o[0].transpose(0, 1))
        return out


class PaddedSDPA:
    """Tokens scattered into a (B, H, Tp, hd) batch; one SDPA call with bias + key padding."""

    def __init__(self, tok_grid: torch.Tensor, B: int, Tp: int, masks: list[torch.Tensor]):
        self.tok_grid, self.B, self.Tp, self.masks = tok_grid, B, Tp, masks

    def __call__(self, qkv: torch.Tensor, heads: int, layer: int) -> torch.Tensor:
        N, C3 = qkv.shape
        C = C3 // 3
        hd = C // heads
        pad = qkv.new_zeros(self.B * self.Tp, C3)
        pad[self.tok_grid] = qkv
        q, k, v = pad.view(self.B, self.Tp, 3, heads, hd).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.masks[layer].to(q.dtype))
        return o.transpose(1, 2).reshape(self.B * self.Tp, C)[self.tok_grid]


def padded_masks(B: int, Tp: int, extra: int, n_frames: torch.Tensor, slopes, scales,
                 layers: int, device) -> list[torch.Tensor]:
    """Per layer (shared when the scale is): (B, H, Tp, Tp) float masks, bias + -inf keys."""
    keypad = torch.zeros(B, 1, 1, Tp, device=device)
    keys = torch.arange(Tp, device=device)[None, :] >= (extra + n_frames)[:, None]
    keypad.masked_fill_(keys[:, None, None, :], float("-inf"))
    made: dict[int, torch.Tensor] = {}
    out = []
    for i in range(layers):
        j = 0 if scales.shape[0] == 1 else i
        if j not in made:
            made[j] = explicit_bias(Tp - extra, extra, slopes, scales[j], device) + keypad
        out.append(made[j])
    return out


def document_block_mask(tok_doc: torch.Tensor, block: int = FLEX_BLOCK):
    """A FlexAttention BlockMask keeping packed documents apart, from the (non-decreasing)
    document id of each token: block (q, k) is computed when their document ranges overlap,
    and is "full" (no per-element mask needed) when both lie inside the same document.
    O((N/block)²) small tensors; no sync, no N² anything."""
    from torch.nn.attention.flex_attention import BlockMask, noop_mask

    n = tok_doc.shape[0]
    nb = n // block
    d = tok_doc.view(nb, block)
    first, last = d[:, 0], d[:, -1]
    touch = (first[None, :] <= last[:, None]) & (last[None, :] >= first[:, None])
    inside = first == last
    full = inside[:, None] & inside[None, :] & (first[:, None] == first[None, :])
    partial = touch & ~full

    def ordered(m: torch.Tensor):
        num = m.sum(-1, dtype=torch.int32)
        order = torch.argsort(m.to(torch.int8), dim=-1, descending=True, stable=True)
        return num[None, None], order.to(torch.int32)[None, None]

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(full)
    # Documents are kept apart inside the score_mod (-inf across documents), so the
    # per-element mask is a no-op and the compiled kernel is shared by every batch.
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=noop_mask, seq_lengths=(n, n))


def flex_alibi(q, k, v, slopes, scale, tok_doc, tok_frame, block_mask):
    """FlexAttention with FunASR's ALiBi as a score_mod over packed documents; (1, H, N, hd)."""
    from torch.nn.attention.flex_attention import flex_attention

    def score_mod(score, b, h, qi, ki):
        bias = (slopes[h] * (qi - ki).abs()) * scale[h]  # FunASR's order of products
        bias = torch.where((tok_frame[qi] > 0) & (tok_frame[ki] > 0), bias, 0.0)
        return torch.where(tok_doc[qi] == tok_doc[ki], score - bias, float("-inf"))

    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)


@functools.lru_cache(maxsize=None)
def compiled_flex_alibi():
    """`flex_alibi` compiled once per process, dynamic in the token count."""
    return torch.compile(flex_alibi, dynamic=True)


class FlexALiBi:
    """FlexAttention over the packed tokens of a batch (padded to a multiple of FLEX_BLOCK)."""

    def __init__(self, tok_doc: torch.Tensor, tok_frame: torch.Tensor, slopes: torch.Tensor,
                 scales: torch.Tensor, compiled: bool):
        # Fresh int32 tensors: the kernel reads them per block, and views into the shipped
        # buffer (a storage offset) trip the CPU kernel's code generation.
        self.tok_doc, self.tok_frame = tok_doc.to(torch.int32), tok_frame.to(torch.int32)
        self.slopes, self.scales = slopes, scales  # (H,), (L|1, H) float32 on the device
        self.block_mask = document_block_mask(self.tok_doc)
        self.fn = compiled_flex_alibi() if compiled else flex_alibi
        self.compiled = compiled

    def __call__(self, qkv: torch.Tensor, heads: int, layer: int) -> torch.Tensor:
        N, C3 = qkv.shape
        C = C3 // 3
        hd = C // heads
        q, k, v = qkv.view(N, 3, heads, hd).permute(1, 2, 0, 3).unsqueeze(1)  # 3×(1, H, N, hd)
        scale = self.scales[0 if self.scales.shape[0] == 1 else layer]
        if self.compiled:
            o = self.fn(q, k, v, self.slopes, scale, self.tok_doc, self.tok_frame,
                        self.block_mask)
        else:
            with warnings.catch_warnings():  # eager FlexAttention warns that it is unfused
                warnings.simplefilter("ignore")
                o = self.fn(q, k, v, self.slopes, scale, self.tok_doc, self.tok_frame,
                            self.block_mask)
        return o[0].transpose(0, 1).reshape(N, C)
