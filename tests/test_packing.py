"""A batch's layout, its one-copy shipping and the device-side waveform normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ingest.extractor import conv_frames
from ingest.packing import Layout, normalise, ship

SPECS = [(8, 10, 5)] + [(8, 3, 2)] * 4 + [(8, 2, 2)] * 2  # emotion2vec's strides: 320 in all
CPU = torch.device("cpu")


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * rng.uniform(0.01, 2) + rng.uniform(-0.5, 0.5))
            .astype(np.float32) for n in lengths]


# lengths: shorter than a stride row, exact multiples of 320, odd, long
LENGTHS = [400, 640, 1001, 320 * 50, 16_000 * 3 + 7, 777]


def test_layout_places_every_frame_and_token():
    E, block = 3, 128
    lay = Layout.of(LENGTHS, SPECS, E, block)
    a = lay.arrays
    f = [conv_frames(n, SPECS) for n in LENGTHS]
    assert lay.n_frames.tolist() == f and lay.N == sum(f) and lay.T == max(f)
    assert all(o % 320 == 0 for o in lay.offsets) and lay.stream_len % 320 == 0
    assert lay.n_tokens == sum(E + x for x in f) and lay.n_tokens_padded % block == 0
    # brute force, segment by segment
    src, seg, grid, tok, extra, doc, tgrid = [], [], [], [], [], [], []
    t = 0
    for i, (o, fi) in enumerate(zip(lay.offsets.tolist(), f)):
        src += [o // 320 + j for j in range(fi)]
        seg += [i] * fi
        grid += [i * lay.T + j for j in range(fi)]
        extra += [t + j for j in range(E)]
        tok += [t + E + j for j in range(fi)]
        doc += [i] * (E + fi)
        tgrid += [i * (E + lay.T) + j for j in range(E + fi)]
        t += E + fi
    doc += [len(f)] * (lay.n_tokens_padded - t)
    assert a["frame_src"].tolist() == src and a["frame_seg"].tolist() == seg
    assert a["frame_grid"].tolist() == grid and a["frame_tok"].tolist() == tok
    assert a["extra_tok"].tolist() == extra and a["tok_doc"].tolist() == doc
    assert a["tok_grid"].tolist() == tgrid
    assert sorted(tok + extra) == list(range(t))
    assert a["tok_frame"][tok].all() and a["tok_frame"].sum() == lay.N
    assert lay.token_spans[1] == (E + f[0], 2 * E + f[0] + f[1])
    # rows of one stride: which segment, how many of its samples
    for i, (o, n) in enumerate(zip(lay.offsets.tolist(), LENGTHS)):
        rows = range(o // 320, o // 320 + -(-n // 320))
        assert all(a["row_seg"][r] == i for r in rows)
        assert a["row_valid"][list(rows)].sum() == n


def test_one_buffer_one_copy():
    ws = _waves(LENGTHS)
    lay = Layout.of(LENGTHS, SPECS, 2)
    b = ship(ws, lay, CPU)
    base = b.raw.untyped_storage().data_ptr()
    assert all(t.untyped_storage().data_ptr() == base for t in b.idx.values())
    for k, v in lay.arrays.items():
        assert b.idx[k].tolist() == v.tolist(), k
    for w, o in zip(ws, lay.offsets.tolist()):
        np.testing.assert_array_equal(b.raw[o:o + w.size].numpy(), w)


@pytest.mark.parametrize("enabled", [True, False])
def test_device_normalisation_equals_per_waveform_layer_norm(enabled):
    ws = _waves(LENGTHS, seed=3)
    ws.append(np.zeros(900, np.float32))  # silent: layer_norm gives zeros, not NaN
    lay = Layout.of([w.size for w in ws], SPECS, 0)
    b = ship(ws, lay, CPU)
    gaps = torch.ones(lay.stream_len, dtype=torch.bool)
    for w, o in zip(ws, lay.offsets.tolist()):
        gaps[o:o + w.size] = False
    b.raw[gaps] = float("nan")  # whatever the reused buffer held never leaks in
    out = normalise(b, enabled)
    assert out is b.stream and out.dtype == torch.float32
    for w, o in zip(ws, lay.offsets.tolist()):
        x = torch.from_numpy(w)
        want = F.layer_norm(x, x.shape) if enabled else x
        torch.testing.assert_close(out[o:o + w.size], want, rtol=0, atol=2e-6)
    assert (out[gaps] == 0).all()
