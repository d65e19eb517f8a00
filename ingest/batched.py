"""FunASR's Emotion2vec forward, batched so that every sample sees exactly what it sees alone.

FunASR runs one waveform at a time with no padding mask. Batching naively would let padding
leak into the conv feature extractor's tail, the positional convolution, attention and
pooling. This module walks the same weights (the FunASR module's own parameters, never a
copy) through a batched forward in which padding is invisible:

* waveforms are layer-normalised one by one over their own length (as FunASR does);
* the conv feature extractor runs on ONE stream: each sample starts on a multiple of the
  extractor's total stride (320 samples), so every strided layer sees each sample on the same
  grid as alone; a sample's frames are the conv-formula count from its own length, and the
  frames that straddle two samples are never read again. Convolutions are written as GEMMs on a
  (time, channel) layout, which also avoids FunASR's transposes around each layer norm;
* per-token work (projections, layer norms, MLPs) runs on the packed valid tokens only;
* the positional convolution runs on a zero-padded (B, D, T) batch, re-zeroed after every layer;
* attention is `F.scaled_dot_product_attention` with ALiBi (times its learned per-head scale,
  zero for the extra tokens) folded into the float mask: either one padded call with -inf on
  padded keys (CUDA) or one call per sample on its own tokens (CPU, no padding at all);
* pooling averages only each sample's own frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MIN_SAMPLES = 400  # shorter than the extractor's receptive field: FunASR raises, so do we


class Unsupported(Exception):
    """This checkpoint uses a variant of the architecture the batched forward does not cover."""


def conv_frames(n: int, specs) -> int:
    """Frames the conv feature extractor makes from `n` samples (FunASR's formula)."""
    for _, k, s in specs:
        if n < k:
            return 0
        n = (n - k) // s + 1
    return n


@dataclass
class Block:
    """One AltBlock's callables; linears may be swapped for int8 versions."""
    qkv: nn.Module
    proj: nn.Module
    fc1: nn.Module
    fc2: nn.Module
    act: nn.Module
    norm1: nn.Module
    norm2: nn.Module
    heads: int
    pre_ln: bool

    @property
    def plain(self) -> bool:
        """Every part a stock module (no int8 swap): the functional tail applies."""
        return all(type(m) is nn.Linear for m in (self.qkv, self.proj, self.fc1, self.fc2)) \
            and all(type(m) is nn.LayerNorm and m.elementwise_affine
                    for m in (self.norm1, self.norm2)) \
            and self.norm1.eps == self.norm2.eps and isinstance(self.act, nn.GELU) \
            and self.act.approximate == "none"


@dataclass
class Batch:
    """Geometry of one batch on its device."""
    n_samples: list[int]
    n_frames: list[int]
    stream: torch.Tensor  # (L,) all waveforms, each padded to a multiple of the total stride
    offsets: list[int]  # start of each sample in the stream, in samples


class BatchedEmotion2vec:
    """The forward of a loaded FunASR `Emotion2vec`, batched and mask-exact."""

    def __init__(self, model: nn.Module):
        enc = model.modality_encoders["AUDIO"]
        mcfg = enc.modality_cfg
        if mcfg.get("extractor_mode", "layer_norm") != "layer_norm":
            raise Unsupported("extractor_mode 'default' normalises over time (group norm)")
        if enc.fixed_positional_encoder is not None or mcfg.get("learned_alibi", False):
            raise Unsupported("fixed positional encoder / learned ALiBi")
        if enc.relative_positional_encoder is None:
            raise Unsupported("no relative positional encoder")
        self.model = model
        self.enc = enc
        self.specs = [tuple(int(v) for v in s) for s in enc.feature_enc_layers]
        self.stride = math.prod(s for _, _, s in self.specs)
        self.extractor = []
        for seq in enc.local_encoder.conv_layers:
            conv, ln = seq[0], seq[2][1]
            if conv.bias is not None or not ln.elementwise_affine:
                raise Unsupported("conv bias / no affine layer norm in the feature extractor")
            if not isinstance(seq[3], nn.GELU) or seq[3].approximate != "none":
                raise Unsupported("feature extractor activation")
            self.extractor.append((conv, ln, seq[3]))
        self.project = enc.project_features  # TransposeLast, LayerNorm, Linear
        pos = enc.relative_positional_encoder
        self.pos_pre_ln = None
        if isinstance(pos[0], nn.LayerNorm):  # conv_pos_pre_ln
            self.pos_pre_ln, pos = pos[0], pos[1]
        self.pos_layers = [m for m in pos if isinstance(m, nn.Sequential)]
        for layer in self.pos_layers:
            conv = layer[0]
            if len(layer) != 6 or not isinstance(conv, nn.Conv1d) \
                    or not isinstance(layer[3], nn.LayerNorm) or not isinstance(layer[5], nn.GELU):
                raise Unsupported("positional convolution layout")
            if conv.stride[0] != 1 or conv.padding[0] != conv.kernel_size[0] // 2:
                raise Unsupported("positional convolution geometry")
        self.num_extra = int(mcfg.num_extra_tokens)
        self.extra = enc.extra_tokens
        self.ctx_norm = enc.context_encoder.norm
        self.ctx_norm_last = bool(enc.context_encoder.layer_norm_first)
        self.final_norm = model.norm
        self.prenet_depth = len(enc.context_encoder.blocks)
        blocks = list(enc.context_encoder.blocks) + list(model.blocks)
        self.blocks = [self._block(b) for b in blocks]
        self.heads = self.blocks[0].heads
        self.alibi_heads = int(mcfg.num_alibi_heads) if enc.get_alibi_bias is not None else 0
        self._alibi_cache: dict = {}
        self._tap_cache: dict = {}
        self.tail, self.ln_gelu = post_ln_tail, ln_gelu  # torch.compile may replace these
        self.extract_frames = 1000  # conv extractor window, in final frames (20 s)
        self.receptive = _receptive(self.specs)
        # Windowing needs the layer-by-layer formula to agree with stride/receptive field.
        self.windowed = _windowable(self.specs)
        self.n_head = 2 if len(self.specs) > 2 and _windowable(self.specs[:2]) else 0
        self.head_stride = math.prod(s for _, _, s in self.specs[:self.n_head])
        self.head_receptive = _receptive(self.specs[:self.n_head])
        self.head_frames = 1024  # head window, in its output frames (~0.6 s)

    def compile(self, **kw) -> None:
        """Compile the fusable pieces (block tails, layer norm + GELU); dynamic in length."""
        self.tail = torch.compile(post_ln_tail, **kw)
        self.ln_gelu = torch.compile(ln_gelu, **kw)

    @staticmethod
    def _block(b) -> Block:
        if getattr(b.attn, "cosine_attention", False):
            raise Unsupported("cosine attention")
        if not isinstance(b.mlp.norm, nn.Identity):
            raise Unsupported("normalised MLP")
        return Block(b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2, b.mlp.act, b.norm1,
                     b.norm2, b.attn.num_heads, bool(b.layer_norm_first))

    def linears(self) -> list[tuple[Block, str]]:
        """(block, attribute) of every transformer linear, for int8 swaps."""
        return [(b, name) for b in self.blocks for name in ("qkv", "proj", "fc1", "fc2")]

    # -- geometry ------------------------------------------------------------------------
    def frames(self, n: int) -> int:
        return conv_frames(n, self.specs)

    def layout(self, lengths: list[int]) -> tuple[list[int], int]:
        """Stream offsets (multiples of the total stride) and the stream length."""
        offsets, at = [], 0
        for n in lengths:
            offsets.append(at)
            at += -(-n // self.stride) * self.stride
        return offsets, at

    # -- the forward ---------------------------------------------------------------------
    def features(self, batch: Batch, dtype: torch.dtype = torch.float32,
                 attention: str = "padded") -> torch.Tensor:
        """Packed final frame features (sum of n_frames, D), sample after sample.

        `dtype` is the attention's compute dtype (the autocast dtype, if any); `attention`
        is "padded" or "varlen" (see `Attention`)."""
        x = self._extract(batch)  # (N, C) valid extractor frames, packed
        x = self.project[2](self.project[1](x))  # LayerNorm + Linear → (N, D)
        B, frames = len(batch.n_frames), batch.n_frames
        T = max(frames)
        dev = x.device
        t = torch.arange(T, device=dev)
        lens = torch.tensor(frames, device=dev)
        valid = t[None, :] < lens[:, None]  # (B, T)
        flat = valid.reshape(-1).nonzero().squeeze(1)  # packed → padded positions
        x = x + self._positional(x, flat, valid, B, T)
        # Extra tokens in front of each sample, then the context encoder and main blocks.
        E = self.num_extra
        Tp = E + T
        tok_valid = torch.cat([valid.new_ones(B, E), valid], dim=1)  # (B, Tp)
        tok_flat = tok_valid.reshape(-1).nonzero().squeeze(1)
        if E:
            pad = x.new_zeros(B * Tp, x.shape[1])
            pad.view(B, Tp, -1)[:, :E] = self.extra.to(x.dtype)
            pad[(torch.arange(B, device=dev)[:, None] * Tp + E + t[None, :])[valid]] = x
            x = pad[tok_flat]
        if self.ctx_norm is not None and not self.ctx_norm_last:
            x = self.ctx_norm(x)
        masks = self._masks(tok_valid, dtype, attention)
        counts = [E + f for f in frames]
        ends = torch.tensor(counts).cumsum(0).tolist()
        spans = [(e - c, e) for c, e in zip(counts, ends)]
        for i, blk in enumerate(self.blocks):
            att = Attention(attention, masks[i], tok_flat, B, Tp, spans)
            x = self._block_forward(blk, x, att)
            if i + 1 == self.prenet_depth and self.ctx_norm is not None and self.ctx_norm_last:
                x = self.ctx_norm(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if E:  # drop the extra tokens: keep positions ≥ E of each sample
            keep = (tok_flat % Tp) >= E
            x = x[keep]
        return x

    def _extract(self, batch: Batch) -> torch.Tensor:
        """Conv feature extractor on the stream; returns each sample's valid frames, packed.

        All its convolutions are valid (unpadded), so stream frames [f0, f1) are exactly the
        output of stream samples [S·f0, S·(f1-1) + R) (S: total stride, R: receptive field).
        The stream is run in such windows of `extract_frames`: memory stays bounded and the
        large early activations stay small enough to be reused from the allocator and cache.
        """
        x, S, R = batch.stream, self.stride, self.receptive
        total = self.frames(x.shape[0])
        if self.windowed:
            W = max(1, self.extract_frames)
            pieces = [x[S * f0:S * (min(total, f0 + W) - 1) + R] for f0 in range(0, total, W)]
        else:
            pieces = [x]
        outs = []
        for y in pieces:
            y = self._head(y)
            for (conv, ln, _), (_, k, s) in zip(self.extractor[self.n_head:],
                                                self.specs[self.n_head:]):
                y = self._layer(y, conv, ln, k, s)
            outs.append(y)
        y = torch.cat(outs) if len(outs) > 1 else outs[0]
        # Frames of sample i start at offset_i / S and number n_frames[i].
        idx = torch.cat([torch.arange(o // S, o // S + f)
                         for o, f in zip(batch.offsets, batch.n_frames)])
        return y[idx.to(y.device)]

    def _layer(self, y, conv, ln, k: int, s: int) -> torch.Tensor:
        return self.ln_gelu(_conv_tc(y, self._taps(conv, s), k, s), ln.weight, ln.bias, ln.eps)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The first layers (the widest activations: 3,200 and 1,600 frames a second) in short
        windows whose activations stay in cache; exact for the same reason as `_extract`."""
        if not self.n_head:
            return x
        S, R, W = self.head_stride, self.head_receptive, self.head_frames
        total = conv_frames(x.shape[0], self.specs[:self.n_head])
        outs = []
        for f0 in range(0, total, W):
            y = x[S * f0:S * (min(total, f0 + W) - 1) + R]
            for (conv, ln, _), (_, k, s) in zip(self.extractor[:self.n_head],
                                                self.specs[:self.n_head]):
                y = self._layer(y, conv, ln, k, s)
            outs.append(y)
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _taps(self, conv: nn.Conv1d, s: int) -> list[torch.Tensor]:
        """Conv weights re-laid out for GEMMs, made once (4 % of the parameters) and remade
        if the weight tensor is replaced or modified in place."""
        w = conv.weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        hit = self._tap_cache.get(id(conv))
        if hit is None or hit[0] != key:
            hit = self._tap_cache[id(conv)] = (key, conv_taps(w.detach(), s))
        return hit[1]

    def _positional(self, x, flat, valid, B, T) -> torch.Tensor:
        """The positional conv stack on a zero-padded batch, re-zeroed after each layer."""
        if self.pos_pre_ln is not None:
            x = self.pos_pre_ln(x)
        D = x.shape[1]
        y = x.new_zeros(B * T, D)
        y[flat] = x
        y = y.view(B, T, D)
        keep = valid.unsqueeze(-1).to(y.dtype)
        for layer in self.pos_layers:
            conv, same, ln, act = layer[0], layer[1], layer[3], layer[5]
            z = same(conv(y.transpose(1, 2)))  # (B, D, T)
            y = act(ln(z.transpose(1, 2))) * keep
        return y.reshape(B * T, D)[flat]

    def _alibi(self, T: int, device) -> torch.Tensor | None:
        """ALiBi (H, T, T) for frames, scaled by the learned per-head scale, cached."""
        if not self.alibi_heads:
            return None
        hit = self._alibi_cache.get(device)
        if hit is None or hit.shape[-1] < T:  # ALiBi depends on |i - j| only: slice the largest
            from funasr.models.emotion2vec.base import get_alibi
            hit = get_alibi(T, self.alibi_heads).to(device=device, dtype=torch.float32)
            self._alibi_cache[device] = hit
        return hit[:, :T, :T]

    def _masks(self, tok_valid: torch.Tensor, dtype, attention: str) -> list[torch.Tensor]:
        """Float attention masks: ALiBi among frames, 0 for the extra tokens, and for "padded"
        attention -inf on padded keys, (B, H, Tp, Tp); for "varlen" the shared (1, H, Tp, Tp)
        whose top-left corner is each sample's own mask. One tensor for every block unless
        the ALiBi scales are per layer."""
        B, Tp = tok_valid.shape
        E, H, dev = self.num_extra, self.heads, tok_valid.device
        keypad = torch.zeros(B, 1, 1, Tp, device=dev, dtype=torch.float32)
        if attention == "padded":
            keypad.masked_fill_(~tok_valid[:, None, None, :], float("-inf"))
        else:
            keypad = keypad[:1]
        base = self._alibi(Tp - E, dev)
        if base is None:
            return [keypad.to(dtype)] * len(self.blocks)
        scale = self.enc.alibi_scale.detach().float().clamp_min(0)  # (L|1, 1, Ha, 1, 1)
        out, made = [], {}
        for i in range(len(self.blocks)):
            j = 0 if scale.size(0) == 1 else i
            if j not in made:
                ab = torch.zeros(1, H, Tp, Tp, device=dev, dtype=torch.float32)
                ab[:, :self.alibi_heads, E:, E:] = base * scale[j, 0]
                made[j] = ab.to(dtype) + keypad.to(dtype)
            out.append(made[j])
        return out

    def _block_forward(self, b: Block, x, att: "Attention") -> torch.Tensor:
        if b.pre_ln:  # data2vec 2.0's pre-LN branch, residual quirk included
            x = x + b.proj(att(b.qkv(b.norm1(x)), b.heads))
            r = x = b.fc2(b.act(b.fc1(b.norm2(x))))
            return r + x
        o = att(b.qkv(x), b.heads)
        if b.plain:  # one fusable function of plain tensors (what torch.compile sees)
            return self.tail(x, o, b.proj.weight, b.proj.bias, b.norm1.weight, b.norm1.bias,
                             b.fc1.weight, b.fc1.bias, b.fc2.weight, b.fc2.bias,
                             b.norm2.weight, b.norm2.bias, b.norm1.eps)
        x = b.norm1(x + b.proj(o))
        return b.norm2(x + b.fc2(b.act(b.fc1(x))))


def _receptive(specs) -> int:
    r = 1
    for _, k, s in reversed(specs):
        r = (r - 1) * s + k
    return r


def _windowable(specs) -> bool:
    """Whether W output frames come from exactly stride·(W-1) + receptive inputs."""
    S, R = math.prod(s for _, _, s in specs), _receptive(specs)
    return all(conv_frames(S * (w - 1) + R, specs) == w for w in (1, 2, 3, 7, 100, 101)) \
        and all(conv_frames(S * (w - 1) + R + S - 1, specs) == w for w in (1, 2, 7))


def post_ln_tail(x, o, pw, pb, n1w, n1b, f1w, f1b, f2w, f2b, n2w, n2b, eps: float):
    """AltBlock after attention (post-LN): proj, residual, LN, MLP with exact GELU, LN."""
    c = (x.shape[-1],)
    x = F.layer_norm(x + F.linear(o, pw, pb), c, n1w, n1b, eps)
    h = torch.ops.aten.gelu_(F.linear(x, f1w, f1b))  # in place on a fresh tensor
    return F.layer_norm(x + F.linear(h, f2w, f2b), c, n2w, n2b, eps)


def ln_gelu(x, w, b, eps: float):
    """The feature extractor's Fp32LayerNorm over channels, then exact GELU."""
    y = F.layer_norm(x.float(), (x.shape[-1],), w.float(), b.float(), eps).type_as(x)
    return torch.ops.aten.gelu_(y)  # in place: layer_norm always returns a fresh tensor


class Attention:
    """Multi-head attention over packed tokens (N, 3C) → (N, C), two ways:

    * "padded": scatter into a (B, H, Tp, hd) batch, one SDPA call with a float mask of ALiBi
      plus -inf on padded keys (best where kernel launches cost: CUDA);
    * "varlen": one SDPA call per sample on its own rows with its own ALiBi slice; no padding
      exists at all (best on CPU, where padded attention is wasted arithmetic).
    """

    def __init__(self, mode, mask, tok_flat, B, Tp, spans):
        self.mode, self.mask, self.tok_flat = mode, mask, tok_flat
        self.B, self.Tp, self.spans = B, Tp, spans

    def __call__(self, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        N, C3 = qkv.shape
        C = C3 // 3
        hd = C // heads
        if self.mode == "padded":
            pad = qkv.new_zeros(self.B * self.Tp, C3)
            pad[self.tok_flat] = qkv
            q, k, v = pad.view(self.B, self.Tp, 3, heads, hd).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask.to(q.dtype))
            return o.transpose(1, 2).reshape(self.B * self.Tp, C)[self.tok_flat]
        out = qkv.new_empty(N, C)
        for s, e in self.spans:
            q, k, v = qkv[s:e].view(e - s, 3, heads, hd).permute(1, 2, 0, 3)
            m = self.mask[..., :e - s, :e - s].to(q.dtype)
            o = F.scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                               attn_mask=m)
            out[s:e].view(e - s, heads, hd).copy_(o[0].transpose(0, 1))
        return out


def _conv_tc(x: torch.Tensor, taps: list[torch.Tensor], k: int, s: int) -> torch.Tensor:
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
        return F.linear(cols, taps[0].to(x.dtype))
    out = None
    for g, w in enumerate(taps):
        j = g * s
        width = w.shape[1] // C
        view = x.as_strided((n, width * C), (s * C, 1), x.storage_offset() + j * C)
        w = w.to(x.dtype)
        out = F.linear(view, w) if out is None else out.addmm_(view, w.t())
    return out


def conv_taps(w: torch.Tensor, s: int) -> list[torch.Tensor]:
    """A (C_out, C_in, k) conv weight re-laid out for `_conv_tc`: one (C_out, width·C_in)
    matrix per group of ≤ s taps, tap-major; a single (C_out, k) matrix when C_in is 1."""
    cout, cin, k = w.shape
    if cin == 1:
        return [w.reshape(cout, k)]
    return [w[:, :, j:j + s].permute(0, 2, 1).reshape(cout, -1).contiguous()
            for j in range(0, k, s)]
