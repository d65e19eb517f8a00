"""ALiBi attention over packed segments: FlexAttention's score_mod and block mask give what
FunASR's explicit bias gives, segment by segment."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ingest.attention import (FLEX_BLOCK, FlexALiBi, PaddedSDPA, VarlenSDPA, alibi_scales,
                              alibi_slopes, document_block_mask, explicit_bias, padded_masks)

H, HD, E = 4, 16, 3
FRAMES = [50, 300, 7, 200, 129]  # frames per segment: block-straddling, tiny, exact-ish


def _packed(frames=FRAMES, extra=E, block=FLEX_BLOCK, seed=0):
    """Packed qkv and layout tensors for segments of `frames` (+ `extra` tokens each)."""
    counts = [extra + f for f in frames]
    n = sum(counts)
    n_pad = -(-n // block) * block
    B = len(frames)
    doc = torch.cat([torch.arange(B).repeat_interleave(torch.tensor(counts)),
                     torch.full((n_pad - n,), B)])
    pos = torch.cat([torch.arange(c) for c in counts] + [torch.zeros(n_pad - n, dtype=torch.long)])
    frame = ((pos >= extra) & (doc < B)).long()
    # views into one buffer, with storage offsets, as the engine ships them
    shipped = torch.cat([torch.zeros(5, dtype=torch.long), doc, frame])
    doc, frame = shipped[5:5 + n_pad], shipped[5 + n_pad:]
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(n_pad, 3 * H * HD, generator=g)
    spans, s = [], 0
    for c in counts:
        spans.append((s, s + c))
        s += c
    return qkv, doc, frame, spans


def _funasr_bias(T, extra, slopes, scale):
    """FunASR's own construction: get_alibi × scale, zero-padded for the extra tokens."""
    from funasr.models.emotion2vec.base import get_alibi
    Ha = int((slopes != 0).sum())
    ab = get_alibi(T, Ha) * scale[:Ha, None, None]
    out = torch.zeros(1, H, extra + T, extra + T)
    out[0, :Ha] = F.pad(ab, (extra, 0, extra, 0))
    return out


def test_explicit_bias_is_funasrs():
    slopes, scale = alibi_slopes(H, 3), torch.tensor([0.5, 1.0, 1.5, 2.0])
    assert slopes[3] == 0 and (slopes[:3] > 0).all()
    torch.testing.assert_close(explicit_bias(40, E, slopes, scale, "cpu"),
                               _funasr_bias(40, E, slopes, scale), rtol=0, atol=0)


def test_alibi_scales_shapes():
    class Enc:
        alibi_scale = torch.nn.Parameter(torch.tensor([[[[[2.0]]]]]))
    assert alibi_scales(Enc, H).tolist() == [[2.0] * H]
    Enc.alibi_scale = torch.nn.Parameter(torch.tensor([-1.0, 3.0]).view(1, 1, 2, 1, 1))
    assert alibi_scales(Enc, H).tolist() == [[0.0, 3.0, 1.0, 1.0]]  # clamped at 0 like FunASR
    Enc.alibi_scale = torch.nn.Parameter(torch.ones(6, 1, H, 1, 1))
    assert alibi_scales(Enc, H).shape == (6, H)


def _per_segment_reference(qkv, spans, slopes, scale):
    out = torch.zeros(qkv.shape[0], H * HD)
    for s, e in spans:
        q, k, v = qkv[s:e].view(e - s, 3, H, HD).permute(1, 2, 0, 3)
        bias = _funasr_bias(e - s - E, E, slopes, scale)
        o = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=bias)
        out[s:e] = o[0].transpose(0, 1).reshape(e - s, -1)
    return out


def test_block_mask_covers_exactly_the_blocks_segments_touch():
    _, doc, _, _ = _packed()
    bm = document_block_mask(doc)
    nb = doc.numel() // FLEX_BLOCK
    same = doc[:, None] == doc[None, :]
    blocks = same.view(nb, FLEX_BLOCK, nb, FLEX_BLOCK).permute(0, 2, 1, 3)
    touched, full = blocks.any(-1).any(-1), blocks.all(-1).all(-1)
    assert torch.equal(bm.to_dense()[0, 0].bool(), touched)  # nothing missed, nothing extra
    dense_full = torch.zeros(nb, nb, dtype=torch.bool)
    for q in range(nb):
        n = int(bm.full_kv_num_blocks[0, 0, q])
        dense_full[q, bm.full_kv_indices[0, 0, q, :n].long()] = True
    assert torch.equal(dense_full, full)  # "full" only where no element needs masking


@pytest.mark.parametrize("compiled", [False, True])
def test_flex_alibi_matches_funasr_bias_per_segment(compiled):
    """Eager: the score_mod's arithmetic. Compiled (the CPU kernel; CUDA compiles the same
    function): the block-sparse schedule, where partial and full blocks take different paths."""
    qkv, doc, frame, spans = _packed()
    slopes, scale = alibi_slopes(H, 3), torch.tensor([0.7, 1.3, 0.2, 5.0])
    att = FlexALiBi(doc, frame, slopes, scale[None], compiled=compiled)
    got = att(qkv, H, 0)
    want = _per_segment_reference(qkv, spans, slopes, scale)
    n = spans[-1][1]
    torch.testing.assert_close(got[:n], want[:n], rtol=0, atol=1e-5)
    assert torch.isfinite(got).all()  # padding tokens attend among themselves


def test_sdpa_variants_match_the_same_reference():
    qkv, _, _, spans = _packed(block=1)
    slopes, scale = alibi_slopes(H, H), torch.tensor([0.7, 1.3, 0.2, 5.0])
    want = _per_segment_reference(qkv, spans, slopes, scale)
    T = max(FRAMES)
    var = VarlenSDPA(spans, [explicit_bias(T, E, slopes, scale, "cpu")])
    torch.testing.assert_close(var(qkv, H, 0), want, rtol=0, atol=1e-5)
    B, Tp = len(FRAMES), E + T
    grid = torch.cat([torch.arange(s, e) - s + i * Tp for i, (s, e) in enumerate(spans)])
    masks = padded_masks(B, Tp, E, torch.tensor(FRAMES), slopes, scale[None], 2, "cpu")
    assert masks[0] is masks[1]  # one scale for every layer: one mask
    pad = PaddedSDPA(grid, B, Tp, masks)
    torch.testing.assert_close(pad(qkv, H, 1), want, rtol=0, atol=1e-5)
    assert masks[0][0, 0, 0, E + FRAMES[0]] == float("-inf")  # segment 0's padded keys
