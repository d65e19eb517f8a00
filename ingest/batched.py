"""FunASR's Emotion2vec forward, batched so that every segment sees exactly what it sees alone.

FunASR runs one waveform at a time with no padding mask. Batching naively would let padding
leak into the conv feature extractor's tail, the positional convolution, attention and
pooling. This module walks FunASR's weights through a batched forward in which padding is
invisible:

* waveforms are normalised one by one over their own length (`ingest.packing.normalise`);
* the conv feature extractor runs on ONE stream (`ingest.extractor`): each segment starts on a
  multiple of the extractor's total stride (320 samples), so every strided layer sees it on the
  same grid as alone; a segment's frames are the conv-formula count from its own length, and
  frames that straddle two segments are never read;
* per-token work (projections, layer norms, MLPs) runs on the packed valid tokens only;
* the positional convolution runs on a zero-padded (B, D, T) batch, re-zeroed after every layer;
* attention keeps segments apart with FunASR's ALiBi (`ingest.attention`);
* pooling (in the engine) averages only each segment's own frames.

In float32 the forward uses the FunASR module's own parameters. In bf16/fp16 it keeps its own
copy of every weight it uses in that dtype, made once, so no operator casts a weight (under
autocast, each linear re-cast its float32 weight on every call); layer norms still reduce in
float32 inside the kernel. The classification head stays float32 (in the engine).

FunASR layout this module reads (the same in funasr 1.2.0 … 1.4.16; pinned in pyproject.toml):
`modality_encoders["AUDIO"]` with `local_encoder.conv_layers[i] = (Conv1d, Dropout,
(TransposeLast, Fp32LayerNorm, TransposeLast), GELU)`, `project_features = (TransposeLast,
LayerNorm, Linear)`,
`relative_positional_encoder = [LayerNorm,] (TransposeLast, (Conv1d, SamePad, TransposeLast,
LayerNorm, TransposeLast, GELU) × depth, TransposeLast)`, `extra_tokens`, `alibi_scale`,
`context_encoder.{blocks, norm, layer_norm_first}`, then `model.blocks` / `model.norm`, each
AltBlock with `attn.{qkv, proj, num_heads}`, `mlp.{fc1, act, fc2, norm}`, `norm1`, `norm2`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ingest.attention import (FlexALiBi, PaddedSDPA, VarlenSDPA, alibi_scales, alibi_slopes,
                              explicit_bias, padded_masks)
from ingest.extractor import ConvExtractor, conv_frames, ln_gelu
from ingest.packing import DeviceBatch

MIN_SAMPLES = 400  # shorter than the extractor's receptive field: FunASR raises, so do we


class Unsupported(Exception):
    """This checkpoint uses a variant of the architecture the batched forward does not cover."""


@dataclass
class Block:
    """One AltBlock's callables; linears may be bf16 copies or int8 versions."""
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


class BatchedEmotion2vec:
    """The forward of a loaded FunASR `Emotion2vec`, batched and mask-exact."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32,
                 extractor: str = "gemm"):
        enc = model.modality_encoders["AUDIO"]
        mcfg = enc.modality_cfg
        if mcfg.get("extractor_mode", "layer_norm") != "layer_norm":
            raise Unsupported("extractor_mode 'default' normalises over time (group norm)")
        if enc.fixed_positional_encoder is not None or mcfg.get("learned_alibi", False):
            raise Unsupported("fixed positional encoder / learned ALiBi")
        if enc.relative_positional_encoder is None:
            raise Unsupported("no relative positional encoder")
        self.model, self.enc, self.dtype = model, enc, dtype
        self.device = next(model.parameters()).device
        layers = []
        for seq in enc.local_encoder.conv_layers:
            conv, ln = seq[0], seq[2][1]
            if conv.bias is not None or not ln.elementwise_affine:
                raise Unsupported("conv bias / no affine layer norm in the feature extractor")
            if not isinstance(seq[3], nn.GELU) or seq[3].approximate != "none":
                raise Unsupported("feature extractor activation")
            layers.append((conv, self._own(ln)))
        self.extractor = ConvExtractor(layers, enc.feature_enc_layers, dtype, extractor)
        self.specs, self.stride = self.extractor.specs, self.extractor.stride
        self.project_ln = self._own(enc.project_features[1])
        self.project = self._own(enc.project_features[2])
        pos = enc.relative_positional_encoder
        self.pos_pre_ln = None
        if isinstance(pos[0], nn.LayerNorm):  # conv_pos_pre_ln
            self.pos_pre_ln, pos = self._own(pos[0]), pos[1]
        self.pos_layers = []
        for layer in (m for m in pos if isinstance(m, nn.Sequential)):
            conv = layer[0]
            if len(layer) != 6 or not isinstance(conv, nn.Conv1d) \
                    or not isinstance(layer[3], nn.LayerNorm) or not isinstance(layer[5], nn.GELU):
                raise Unsupported("positional convolution layout")
            if conv.stride[0] != 1 or conv.padding[0] != conv.kernel_size[0] // 2:
                raise Unsupported("positional convolution geometry")
            self.pos_layers.append((self._own(conv), layer[1], layer[3], layer[5]))
        self.num_extra = int(mcfg.num_extra_tokens)
        self.extra = None if enc.extra_tokens is None else (
            enc.extra_tokens if dtype == torch.float32
            else enc.extra_tokens.detach().to(dtype))
        self.ctx_norm = self._own(enc.context_encoder.norm)
        self.ctx_norm_last = bool(enc.context_encoder.layer_norm_first)
        self.final_norm = self._own(model.norm)
        self.prenet_depth = len(enc.context_encoder.blocks)
        blocks = list(enc.context_encoder.blocks) + list(model.blocks)
        self.blocks = [self._block(b) for b in blocks]
        self.heads = self.blocks[0].heads
        alibi_heads = int(mcfg.num_alibi_heads) if enc.get_alibi_bias is not None else 0
        self.slopes = alibi_slopes(self.heads, alibi_heads).to(self.device)  # (H,)
        self.scales = alibi_scales(enc, self.heads).to(self.device)  # (L|1, H)
        self.tail = post_ln_tail  # torch.compile may replace it

    def _own(self, m: nn.Module | None) -> nn.Module | None:
        """FunASR's module itself in float32; a copy in the compute dtype otherwise."""
        if m is None or self.dtype == torch.float32:
            return m
        return copy.deepcopy(m).to(self.dtype).requires_grad_(False)

    def compile(self, **kw) -> None:
        """Compile the fusable pieces (block tails, layer norm + GELU); dynamic in length."""
        self.tail = torch.compile(post_ln_tail, **kw)
        self.extractor.ln_gelu = torch.compile(ln_gelu, **kw)

    def _block(self, b) -> Block:
        if getattr(b.attn, "cosine_attention", False):
            raise Unsupported("cosine attention")
        if not isinstance(b.mlp.norm, nn.Identity):
            raise Unsupported("normalised MLP")
        return Block(self._own(b.attn.qkv), self._own(b.attn.proj), self._own(b.mlp.fc1),
                     self._own(b.mlp.fc2), b.mlp.act, self._own(b.norm1), self._own(b.norm2),
                     b.attn.num_heads,
                     bool(b.layer_norm_first))

    def linears(self) -> list[tuple[Block, str]]:
        """(block, attribute) of every transformer linear, for int8 swaps."""
        return [(b, name) for b in self.blocks for name in ("qkv", "proj", "fc1", "fc2")]

    def frames(self, n: int) -> int:
        return conv_frames(n, self.specs)

    # -- attention ------------------------------------------------------------------------
    def attention(self, batch: DeviceBatch, mode: str, compiled: bool = False):
        """The attention of one batch: "varlen", "padded" or "flex" (see ingest.attention)."""
        lay, idx, dev = batch.layout, batch.idx, batch.device
        E, L = self.num_extra, len(self.blocks)
        if mode == "flex":
            return FlexALiBi(idx["tok_doc"], idx["tok_frame"], self.slopes, self.scales,
                             compiled)
        if mode == "padded":
            masks = padded_masks(lay.B, E + lay.T, E, idx["n_frames"], self.slopes,
                                 self.scales, L, dev)
            return PaddedSDPA(idx["tok_grid"], lay.B, E + lay.T,
                              [m.to(self.dtype) for m in masks])
        if mode == "varlen":
            made: dict[int, torch.Tensor] = {}
            biases = []
            for i in range(L):
                j = 0 if self.scales.shape[0] == 1 else i
                if j not in made:
                    made[j] = explicit_bias(lay.T, E, self.slopes, self.scales[j],
                                            dev).to(self.dtype)
                biases.append(made[j])
            return VarlenSDPA(lay.token_spans, biases)
        raise ValueError(f"attention must be auto, flex, padded or varlen, not {mode!r}")

    # -- the forward ----------------------------------------------------------------------
    def features(self, batch: DeviceBatch, attention) -> torch.Tensor:
        """Packed final frame features (N, D) in the compute dtype, segment after segment.

        `batch.stream` must be normalised (`ingest.packing.normalise`); `attention` comes
        from `self.attention(batch, ...)`."""
        lay, idx = batch.layout, batch.idx
        x = self.extractor(batch.stream.to(self.dtype))  # (stream frames, C)
        x = x[idx["frame_src"]]  # (N, C) each segment's own frames
        x = self.project(self.project_ln(x))  # LayerNorm + Linear → (N, D)
        x = x + self._positional(x, idx, lay.B, lay.T)
        # Extra tokens in front of each segment (and FlexAttention's padding tokens at the end)
        E, D = self.num_extra, x.shape[1]
        tokens = E > 0 or lay.n_tokens_padded != lay.N
        if tokens:
            t = x.new_zeros(lay.n_tokens_padded, D)
            t[idx["frame_tok"]] = x
            if E:
                t[idx["extra_tok"]] = self.extra.expand(lay.B, E, D).reshape(-1, D)
            x = t
        if self.ctx_norm is not None and not self.ctx_norm_last:
            x = self.ctx_norm(x)
        for i, blk in enumerate(self.blocks):
            x = self._block_forward(blk, x, attention, i)
            if i + 1 == self.prenet_depth and self.ctx_norm is not None and self.ctx_norm_last:
                x = self.ctx_norm(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x[idx["frame_tok"]] if tokens else x

    def _positional(self, x, idx: dict, B: int, T: int) -> torch.Tensor:
        """The positional conv stack on a zero-padded batch, re-zeroed after each layer."""
        if self.pos_pre_ln is not None:
            x = self.pos_pre_ln(x)
        D, grid = x.shape[1], idx["frame_grid"]
        y = x.new_zeros(B * T, D)
        y[grid] = x
        y = y.view(B, T, D)
        keep = torch.arange(T, device=x.device)[None, :] < idx["n_frames"][:, None]
        keep = keep.unsqueeze(-1).to(y.dtype)
        for conv, same, ln, act in self.pos_layers:
            z = same(conv(y.transpose(1, 2)))  # (B, D, T)
            y = act(ln(z.transpose(1, 2))) * keep
        return y.reshape(B * T, D)[grid]

    def _block_forward(self, b: Block, x, att, i: int) -> torch.Tensor:
        if b.pre_ln:  # data2vec 2.0's pre-LN branch, residual quirk included
            x = x + b.proj(att(b.qkv(b.norm1(x)), b.heads, i))
            r = x = b.fc2(b.act(b.fc1(b.norm2(x))))
            return r + x
        o = att(b.qkv(x), b.heads, i)
        if b.plain:  # one fusable function of plain tensors (what torch.compile sees)
            return self.tail(x, o, b.proj.weight, b.proj.bias, b.norm1.weight, b.norm1.bias,
                             b.fc1.weight, b.fc1.bias, b.fc2.weight, b.fc2.bias,
                             b.norm2.weight, b.norm2.bias, b.norm1.eps)
        x = b.norm1(x + b.proj(o))
        return b.norm2(x + b.fc2(b.act(b.fc1(x))))


def post_ln_tail(x, o, pw, pb, n1w, n1b, f1w, f1b, f2w, f2b, n2w, n2b, eps: float):
    """AltBlock after attention (post-LN): proj, residual, LN, MLP with exact GELU, LN."""
    c = (x.shape[-1],)
    x = F.layer_norm(x + F.linear(o, pw, pb), c, n1w, n1b, eps)
    h = torch.ops.aten.gelu_(F.linear(x, f1w, f1b))  # in place on a fresh tensor
    return F.layer_norm(x + F.linear(h, f2w, f2b), c, n2w, n2b, eps)
