"""The batched engine reproduces FunASR's own loop (AutoModel.generate), batches sensibly,
survives out-of-memory, and keeps its speed options honest."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ingest.engine import (Engine, EngineOOM, EngineOptions, compare, get_engine, infer,
                           int8_agreement, plan)
from ingest.model import reference_infer

SR = 16_000
# One batch mixing lengths from 0.3 s to 20 s (seconds).
LENGTHS_S = [0.3, 0.55, 1.0, 2.37, 4.0, 7.31, 12.0, 20.0]
FEATS_TOL, SCORES_TOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def waves(speech) -> list[np.ndarray]:
    """Speech (tiled, gain varied) plus a little noise, cut to LENGTHS_S, odd sample counts."""
    rng = np.random.default_rng(7)
    long = np.tile(speech, int(np.ceil(20 * SR / speech.size)) + 1)
    out = []
    for i, s in enumerate(LENGTHS_S):
        n = int(s * SR) + 2 * i + 1
        start = int(rng.integers(0, SR))
        x = long[start:start + n] * (0.3 + 0.2 * i) + rng.normal(0, 0.01, n)
        out.append(x.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def reference(model, waves):
    return reference_infer(model, waves)


def assert_equivalent(ref, got):
    for i, (r, g) in enumerate(zip(ref, got)):
        assert g.frame_feats.shape == r.frame_feats.shape, i
        assert g.frame_logits.shape == r.frame_logits.shape, i
        np.testing.assert_allclose(g.frame_feats, r.frame_feats, rtol=0, atol=FEATS_TOL)
        np.testing.assert_allclose(g.scores, r.scores, rtol=0, atol=SCORES_TOL)
        np.testing.assert_allclose(g.embedding, r.embedding, rtol=0, atol=FEATS_TOL)
        np.testing.assert_allclose(g.frame_logits, r.frame_logits, rtol=0, atol=1e-3)
        assert int(np.argmax(g.scores)) == int(np.argmax(r.scores)), i


@pytest.mark.parametrize("attention", ["padded", "varlen"])
def test_one_mixed_batch_matches_funasr_generate(model, waves, reference, attention):
    eng = Engine(model, EngineOptions(batch_seconds=1000, max_waste=1.0, attention=attention,
                                      warmup=False))
    assert plan([w.size for w in waves], 1000 * SR, 1.0) == [list(range(len(waves)))[::-1]]
    assert_equivalent(reference, eng.run(waves))


@pytest.mark.parametrize("window", [1, 7, 10_000])
def test_extractor_windows_match(model, waves, reference, window):
    eng = Engine(model, EngineOptions(batch_seconds=1000, max_waste=1.0, warmup=False))
    assert eng.net.windowed and eng.net.receptive == 400 and eng.net.stride == 320
    eng.net.extract_frames = window  # frames per window of the conv stream
    assert_equivalent(reference, eng.run(waves))


def test_default_infer_matches_in_any_order_and_batching(model, waves, reference):
    order = [3, 7, 0, 5, 1, 6, 2, 4]
    got = infer(model, [waves[i] for i in order], batch_seconds=15)
    assert_equivalent([reference[i] for i in order], got)


def test_engine_uses_funasrs_own_weights(model):
    eng = get_engine(model)
    enc = model.module.modality_encoders["AUDIO"]
    blocks = list(enc.context_encoder.blocks) + list(model.module.blocks)
    assert len(eng.net.blocks) == len(blocks)
    for mine, theirs in zip(eng.net.blocks, blocks):
        assert mine.qkv is theirs.attn.qkv and mine.fc2 is theirs.mlp.fc2
    assert eng.net.extractor[0][0] is enc.local_encoder.conv_layers[0][0]
    assert eng.net.extra is enc.extra_tokens


def test_plan_sorts_bounds_budget_and_waste():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5_000, 240_000, 300).tolist()
    budget, waste = 60 * SR, 0.2
    batches = plan(lengths, budget, waste)
    assert sorted(i for b in batches for i in b) == list(range(300))
    longest = [lengths[b[0]] for b in batches]
    assert longest == sorted(longest, reverse=True)
    for b in batches:
        ls = [lengths[i] for i in b]
        assert ls[0] == max(ls)
        padded = len(b) * ls[0]
        assert padded <= budget or len(b) == 1
        assert padded - sum(ls) <= waste * padded + 1e-9
    assert plan([10 * budget, 5], budget, waste) == [[0], [1]]  # too long → alone


def test_out_of_memory_halves_then_names_the_batch(model, waves, reference, monkeypatch):
    eng = Engine(model, EngineOptions(batch_seconds=1000, max_waste=1.0, warmup=False))
    real = Engine._forward
    sizes = []

    def fake(self, ws):
        sizes.append(len(ws))
        if len(ws) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(self, ws)

    monkeypatch.setattr(Engine, "_forward", fake)
    assert_equivalent(reference, eng.run(waves))
    assert sizes[:3] == [8, 4, 2]

    def always(self, ws):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    monkeypatch.setattr(Engine, "_forward", always)
    with pytest.raises(EngineOOM, match=r"segment #7 \(20.0 s\).*batch of 8 segments"):
        eng.run(waves)

    def other(self, ws):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(Engine, "_forward", other)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        eng.run(waves)


def test_too_short_segment_is_named(model):
    with pytest.raises(ValueError, match="segment #1 has 399 samples"):
        infer(model, [np.zeros(8000, np.float32), np.zeros(399, np.float32)])


def test_bad_options_are_named(model):
    with pytest.raises(ValueError, match="precision"):
        Engine(model, EngineOptions(precision="fp8", warmup=False))
    with pytest.raises(ValueError, match="attention"):
        Engine(model, EngineOptions(attention="flash", warmup=False))


def test_progress_hook_counts_segments(model, waves):
    seen = []
    infer(model, waves, batch_seconds=10, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (8, 8) and len(seen) > 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_unsupported_architecture_falls_back_to_funasr(model, waves, reference, monkeypatch):
    import ingest.engine as engine
    from ingest.batched import Unsupported

    def refuse(*a, **k):
        raise Unsupported("test")

    monkeypatch.setattr(engine, "BatchedEmotion2vec", refuse)
    got = infer(model, waves[:2], max_waste=0.123)  # options not cached before
    assert_equivalent(reference[:2], got)


def test_int8_dynamic_quantization_reports_agreement(model, waves, reference):
    rep = int8_agreement(model, waves)
    assert set(rep) == {"feats_max_abs", "scores_max_abs", "label_agreement", "n"}
    assert rep["n"] == len(waves) and 0.0 <= rep["label_agreement"] <= 1.0
    assert rep["feats_max_abs"] < 1.0  # close, not exact
    q = Engine(model, EngineOptions(quantize=True, warmup=False))
    assert "quantized" in type(q.net.blocks[0].qkv).__module__
    assert model.module.blocks[0].attn.qkv.weight.dtype == torch.float32
    # FunASR's own module is untouched: the reference still gives its numbers.
    assert_equivalent(reference[:2], reference_infer(model, waves[:2]))


@pytest.mark.parametrize("attention", ["padded", "varlen"])
def test_autocast_path_on_cpu_runs_in_bf16(model, waves, reference, attention):
    """The reduced-precision path (bf16 autocast and padded attention, as on CUDA) runs on
    CPU too."""
    eng = Engine(model, EngineOptions(precision="bf16", attention=attention, warmup=False))
    assert eng.dtype == torch.bfloat16
    got = eng.run(waves)
    rep = compare(reference, got)
    assert rep["feats_max_abs"] < 0.5 and all(np.isfinite(g.frame_feats).all() for g in got)
    for g in got:
        assert g.frame_feats.dtype == np.float32 and abs(g.scores.sum() - 1) < 1e-4


def _variant(**changes):
    """A tiny Emotion2vec built directly (not through AutoModel) with config changes."""
    from core.labels import TOKENS
    from funasr.models.emotion2vec.model import Emotion2vec
    from ingest.tiny import _config

    cfg = _config("tiny")["model_conf"]
    audio = cfg["modalities"]["audio"]
    for k, v in changes.items():
        (audio if k in audio else cfg)[k] = v
    torch.manual_seed(0)
    m = Emotion2vec(model_conf=cfg, vocab_size=len(TOKENS)).eval()
    with torch.no_grad():
        m.modality_encoders["AUDIO"].alibi_scale.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("changes", [
    {"layer_norm_first": True},
    {"conv_pos_pre_ln": True},
    {"learned_alibi_scale_per_layer": True},
    {"num_extra_tokens": 0},
])
def test_architecture_variants_match_extract_features(changes, waves):
    import torch.nn.functional as F

    from ingest.batched import Batch, BatchedEmotion2vec

    m = _variant(**changes)
    net = BatchedEmotion2vec(m)
    ws = [torch.from_numpy(w) for w in waves[:5]]
    with torch.inference_mode():
        refs = [m.extract_features(F.layer_norm(w, w.shape).view(1, -1))["x"][0] for w in ws]
        lengths = [w.numel() for w in ws]
        offsets, total = net.layout(lengths)
        stream = torch.zeros(total)
        for w, o in zip(ws, offsets):
            stream[o:o + w.numel()] = F.layer_norm(w, w.shape)
        batch = Batch(lengths, [net.frames(n) for n in lengths], stream, offsets)
        for attention in ("padded", "varlen"):
            got = net.features(batch, attention=attention).split(batch.n_frames)
            for r, g in zip(refs, got):
                torch.testing.assert_close(g, r, rtol=0, atol=FEATS_TOL)


def test_compile_option_is_wired(model, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    Engine(model, EngineOptions(compile=True, warmup=False))
    assert calls == [{"dynamic": True}] * 2


# -- GPU (run with `make test-gpu`) -------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_fp32_matches_reference_and_bf16_agrees(waves):
    from ingest.model import load
    lm = load("tiny-random", "cuda")
    ref = reference_infer(lm, waves)
    fp32 = Engine(lm, EngineOptions(precision="fp32"))
    assert fp32.pin and fp32.attention == "padded"
    rep = compare(ref, fp32.run(waves))
    assert rep["feats_max_abs"] < 1e-3 and rep["label_agreement"] == 1.0
    bf16 = Engine(lm, EngineOptions())
    assert bf16.dtype in (torch.bfloat16, torch.float16)
    rep = compare(ref, bf16.run(waves))
    assert rep["label_agreement"] >= 0.75


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_compile_matches(waves):
    from ingest.model import load
    lm = load("tiny-random", "cuda")
    ref = Engine(lm, EngineOptions(precision="fp32")).run(waves)
    got = Engine(lm, EngineOptions(precision="fp32", compile=True)).run(waves)
    assert compare(ref, got)["feats_max_abs"] < 1e-3
