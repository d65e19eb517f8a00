"""Batched emotion2vec+ inference that reproduces FunASR's per-waveform output.

    from ingest.engine import EngineOptions, infer
    outputs = infer(lm, waves)                        # list[Output], same order and meaning
    outputs = infer(lm, waves, EngineOptions(batch_seconds=60), frame_feats=True)
                                                      # as ingest.model.reference_infer

The math lives in `ingest.batched` (the mask-exact batched forward), `ingest.packing` (batch
layout, one host→device copy, waveform normalisation on the device), `ingest.extractor` and
`ingest.attention`. This module decides what runs together and how:

* length bucketing: segments sorted longest first, cut into batches whose padded size
  (count × longest) fits a budget of audio-seconds and whose padding stays under `max_waste`;
* per batch, the device does everything up to the outputs the store keeps: frame logits
  (T×9), the mean embedding (D) and the scores (9), copied back as ONE packed float32 tensor
  (into pinned memory, asynchronously on CUDA, read while the next batch already runs); the
  per-frame features (T×D, the bulk of the old device→host traffic) only when asked;
* out of memory: the batch is halved and retried; a single segment that still does not fit
  raises `EngineOOM` naming it;
* CUDA: bf16 on the engine's own bf16 weight copy (no autocast re-casting weights per op),
  FlexAttention with ALiBi on packed segments, the conv extractor through cuDNN, no host sync
  inside a batch; fp32 on request (`fp32_exact()` turns TF32 off for an exact comparison);
* CPU: float32 on FunASR's own weights, one SDPA call per segment, the extractor as GEMMs in
  cache-sized windows; optional int8 dynamic quantization; no more torch threads than cores.

Where the time goes on a quiet 2-core CPU (base shapes, fp32): ~15 GFLOP per audio-second,
~2/3 of it transformer GEMMs and ~1/3 the conv extractor (as GEMMs here). FunASR's loop already
runs them at ~125 GFLOPS; the engine at ~160 of the ~175 these cores reach in fp32 GEMMs, so
exact fp32 arithmetic caps the CPU gain near 1.4×.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.media.audio import SAMPLE_RATE
from ingest.attention import FLEX_BLOCK
from ingest.batched import MIN_SAMPLES, BatchedEmotion2vec, Unsupported
from ingest.model import LoadedModel, Output, reference_infer
from ingest.packing import Layout, normalise, ship

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (segments done, segments total)


class EngineOOM(RuntimeError):
    """Out of memory even for the smallest batch the engine could make."""


@dataclass(frozen=True)
class EngineOptions:
    batch_seconds: float | None = None  # padded audio-seconds per batch; None → per device
    max_waste: float = 0.2  # largest share of a batch that may be padding
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16
    attention: str = "auto"  # auto (flex on CUDA, varlen on CPU), flex, padded, varlen
    extractor: str = "auto"  # auto (cudnn on CUDA, gemm on CPU), cudnn, gemm
    compile: bool = False  # torch.compile the block tails and extractor norms
    quantize: bool = False  # int8 dynamic quantization of the transformer linears (CPU only)
    warmup: bool = True

    def build_key(self) -> "EngineOptions":
        """The options that shape an engine; the others (batch budget, padding share,
        warm-up) apply per call, so engines differing only in them are one engine."""
        return dataclasses.replace(self, batch_seconds=None, max_waste=0.2, warmup=True)


def default_batch_seconds(device: str) -> float:
    """CPU: ~1,500 tokens, plenty for efficient GEMMs while the largest temporaries stay in
    the allocator's reusable range. CUDA: scaled to free memory (~60 MB per audio-second
    keeps even the padded-attention fallback inside it), at most 1,200 s."""
    if not device.startswith("cuda"):
        return 30.0
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return float(min(1200.0, max(30.0, free / 60e6)))


def plan(lengths: list[int], budget: int, max_waste: float) -> list[list[int]]:
    """Batches of indices: longest first; count × longest ≤ budget samples (a segment longer
    than the budget goes alone) and padding ≤ max_waste of the padded total."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i in order:
        if cur:
            padded = (len(cur) + 1) * lengths[cur[0]]
            if padded > budget or padded - used - lengths[i] > max_waste * padded:
                batches.append(cur)
                cur, used = [], 0
        cur.append(i)
        used += lengths[i]
    if cur:
        batches.append(cur)
    return batches


def cpu_cores() -> int:
    """CPUs this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def fp32_exact():
    """TF32 off for cuBLAS and cuDNN inside the block, restored after: float32 on CUDA is
    then float32 (cuDNN convolutions default to TF32). Use it around BOTH paths compared."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg
                                            or "can't allocate memory" in msg)


@dataclass
class Pending:
    """A batch queued on the device; `outputs()` waits for its packed results."""
    layout: Layout
    host: torch.Tensor  # (B·D + B·9 + N·9,) float32: embeddings, scores, frame logits
    event: object | None  # CUDA event recorded after the copy back; None on CPU
    feats: torch.Tensor | None  # (N, D) float32 on the host, when asked
    dim: int

    def outputs(self) -> list[Output]:
        if self.event is not None:
            self.event.synchronize()
        arr = self.host.numpy()
        if self.event is not None:  # leave the pinned block to the allocator
            arr = arr.copy()
        lay, D = self.layout, self.dim
        B, N, K = lay.B, lay.N, (arr.shape[0] - lay.B * self.dim) // (lay.B + lay.N)
        emb = arr[:B * D].reshape(B, D)
        scores = arr[B * D:B * (D + K)].reshape(B, K)
        cuts = np.cumsum(lay.n_frames)[:-1]
        logits = np.split(arr[B * (D + K):].reshape(N, K), cuts)
        feats = np.split(self.feats.numpy(), cuts) if self.feats is not None else [None] * B
        return [Output(lg, sc, em, ft) for lg, sc, em, ft in zip(logits, scores, emb, feats)]


class Engine:
    """Batched inference for one loaded model on its device."""

    def __init__(self, lm: LoadedModel, opts: EngineOptions = EngineOptions()):
        self.lm, self.opts = lm, opts
        self.device = torch.device(lm.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = self._dtype(opts.precision)
        self.attention = opts.attention if opts.attention != "auto" else (
            "flex" if self.cuda else "varlen")
        if self.attention not in ("flex", "padded", "varlen"):
            raise ValueError(f"attention must be auto, flex, padded or varlen, "
                             f"not {opts.attention!r}")
        self.extractor = opts.extractor if opts.extractor != "auto" else (
            "cudnn" if self.cuda else "gemm")
        self.net = BatchedEmotion2vec(lm.module, self.dtype, self.extractor)
        ext = self.net.extractor
        # CUDA: 120-s extractor windows, no cache-sized sub-windows (each is a kernel launch);
        # CPU: 20-s windows, the first two layers in ~0.6-s windows that stay in cache.
        ext.window_frames, ext.head_frames = (6000, 0) if self.cuda else (1000, 1024)
        self.flex_compiled = self.cuda or opts.compile  # eager FlexAttention is unfused
        proj = lm.module.proj  # the classification head stays float32
        self.head_w = proj.weight.detach()
        bias = proj.bias.detach().clone()
        bias[torch.from_numpy(~lm.mask).to(bias.device)] = float("-inf")  # unused labels
        self.head_b = bias
        self.default_budget = default_batch_seconds(lm.device)
        self.pin = self.cuda and torch.cuda.is_available()
        self._lock = threading.Lock()
        if opts.quantize:
            self._quantize()
        if opts.compile:
            self.net.compile(dynamic=True)
        if opts.warmup:
            self._warm_up_or_fall_back()

    @property
    def budget_s(self) -> float:
        return self.opts.batch_seconds or self.default_budget

    def _dtype(self, precision: str) -> torch.dtype:
        if precision == "auto":
            precision = "bf16" if self.cuda else "fp32"
        if precision == "bf16" and self.cuda and not torch.cuda.is_bf16_supported():
            precision = "fp16"
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        return dtypes[precision]

    def _quantize(self) -> None:
        """Swap the transformer linears for int8 dynamic ones, CPU only. The fp32 originals
        stay in FunASR's module; the engine keeps int8 weights beside them."""
        if self.cuda or self.dtype != torch.float32:
            raise ValueError("int8 dynamic quantization runs on CPU, in fp32, only")
        from torch.ao.nn.quantized.dynamic import Linear as QLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig
        for blk, name in self.net.linears():
            lin = getattr(blk, name)
            obs = per_channel_dynamic_qconfig.weight()
            obs(lin.weight)
            q = QLinear(lin.in_features, lin.out_features, dtype=torch.qint8)
            q.set_weight_bias(torch.quantize_per_channel(
                lin.weight.detach().float(), *obs.calculate_qparams(), 0, torch.qint8),
                None if lin.bias is None else lin.bias.detach())
            setattr(blk, name, q)

    def warm_up(self) -> None:
        """Small batches through every kernel (and the compiler), so the first real batch
        is not the one that pays for initialisation: one batch spanning several
        FlexAttention blocks (compiled for any count) and one within a single block (a
        count of 1 is compiled apart)."""
        rng = np.random.default_rng(0)
        waves = [rng.standard_normal(n).astype(np.float32) * 0.1
                 for n in (48_000, 24_000, 8_000)]
        self.run(waves, opts=EngineOptions(batch_seconds=60, max_waste=1.0))
        self.run(waves[-1:])

    def _warm_up_or_fall_back(self) -> None:
        try:
            self.warm_up()
        except Exception as e:  # noqa: BLE001 — a missing compiler must not stop ingest
            if self.attention != "flex" or self.opts.attention != "auto" or _is_oom(e):
                raise
            log.warning("FlexAttention unavailable on %s (%s); using padded SDPA attention",
                        self.device, str(e).splitlines()[0][:200] if str(e) else type(e))
            self.attention = "padded"
            self.warm_up()

    # -- one batch ------------------------------------------------------------------------
    def _forward(self, waves: list[np.ndarray], frame_feats: bool = False) -> Pending:
        """Queue one batch on the device: one copy in, the forward, one copy out."""
        block = FLEX_BLOCK if self.attention == "flex" else 1
        layout = Layout.of([w.shape[0] for w in waves], self.net.specs, self.net.num_extra,
                           block)
        batch = ship(waves, layout, self.device, self.pin)
        normalise(batch, bool(self.lm.module.cfg.normalize))
        att = self.net.attention(batch, self.attention, self.flex_compiled)
        feats = self.net.features(batch, att).float()  # (N, D)
        logits = torch.addmm(self.head_b, feats, self.head_w.t())  # (N, 9), unused at -inf
        B, D = layout.B, feats.shape[1]
        emb = feats.new_zeros(B, D).index_add_(0, batch.idx["frame_seg"], feats)
        emb = emb / batch.idx["n_frames"][:, None].to(emb.dtype)
        # FunASR: softmax(proj(mean of frames)) with unused labels at -inf.
        scores = torch.softmax(torch.addmm(self.head_b, emb, self.head_w.t()), dim=-1)
        packed = torch.cat([emb.reshape(-1), scores.reshape(-1), logits.reshape(-1)])
        event = None
        if self.cuda:
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=self.pin)
            host.copy_(packed, non_blocking=self.pin)
            event = torch.cuda.Event()
            event.record()
        else:
            host = packed
        return Pending(layout, host, event, feats.cpu() if frame_feats else None, D)

    def _run_batch(self, waves: list[np.ndarray], idx: list[int], first: int,
                   frame_feats: bool) -> list[tuple[list[int], Pending]]:
        try:
            return [(idx, self._forward([waves[i] for i in idx], frame_feats))]
        except Exception as e:  # noqa: BLE001 — only out-of-memory is handled here
            if not _is_oom(e):
                raise
            if self.cuda:
                torch.cuda.empty_cache()
            if len(idx) == 1:
                secs = waves[idx[0]].shape[0] / SAMPLE_RATE
                raise EngineOOM(
                    f"out of memory on {self.device} for segment #{idx[0]} ({secs:.1f} s) even "
                    f"alone, after halving a batch of {first} segments; the budget was "
                    f"{self.budget_s:g} audio-seconds — free memory or use --device cpu") from e
            log.warning("out of memory on a batch of %d segments; halving", len(idx))
            half = len(idx) // 2
            return (self._run_batch(waves, idx[:half], first, frame_feats)
                    + self._run_batch(waves, idx[half:], first, frame_feats))

    def run(self, waves: list[np.ndarray], progress: Progress | None = None, *,
            opts: EngineOptions | None = None, frame_feats: bool = False) -> list[Output]:
        """Outputs for `waves` (1-D float32 16 kHz), in their order. `opts` overrides the
        engine's batch budget and padding share for this call; `frame_feats` also returns
        each segment's (T, D) frame features."""
        opts = opts or self.opts
        waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves]
        for i, w in enumerate(waves):
            if w.shape[0] < MIN_SAMPLES:
                raise ValueError(f"segment #{i} has {w.shape[0]} samples; emotion2vec needs at "
                                 f"least {MIN_SAMPLES} ({MIN_SAMPLES / SAMPLE_RATE * 1e3:.0f} ms)")
        budget = int((opts.batch_seconds or self.default_budget) * SAMPLE_RATE)
        if not self.cuda and torch.get_num_threads() > cpu_cores():
            # FunASR's AutoModel sets 4 threads (its `ncpu` default) at load and on every
            # generate(); more threads than cores only makes GEMMs fight over them.
            torch.set_num_threads(cpu_cores())
        out: list[Output | None] = [None] * len(waves)
        done = 0

        def collect(queued):
            nonlocal done
            for idx, pending in queued:
                for i, o in zip(idx, pending.outputs()):
                    out[i] = o
                done += len(idx)
                if progress is not None:
                    progress(done, len(waves))

        with self._lock, torch.inference_mode():
            ahead: list = []  # queued on the device, read back after the next batch is queued
            for idx in plan([w.shape[0] for w in waves], budget, opts.max_waste):
                queued = self._run_batch(waves, idx, len(idx), frame_feats)
                collect(ahead)
                ahead = queued
            collect(ahead)
        return out  # type: ignore[return-value]


_CREATE = threading.Lock()


def get_engine(lm: LoadedModel, opts: EngineOptions = EngineOptions()) -> Engine:
    """One engine per (loaded model, build options), created (and warmed up) on first use and
    kept on the LoadedModel itself, so it lives and dies with the model it belongs to."""
    key = opts.build_key()
    with _CREATE:
        engine = lm.engines.get(key)
        if engine is None:
            engine = lm.engines[key] = Engine(lm, opts)
    return engine


def warm_up(lm: LoadedModel, opts: EngineOptions = EngineOptions()) -> None:
    """Create and warm the engine right after loading the model."""
    try:
        get_engine(lm, opts)
    except Unsupported as e:
        log.warning("batched engine unavailable for %s (%s)", lm.name, e)


def infer(lm: LoadedModel, waves: list[np.ndarray], opts: EngineOptions | None = None, *,
          progress: Progress | None = None, frame_feats: bool = False) -> list[Output]:
    """Drop-in for `reference_infer(lm, waves)`: same outputs, batched.

    A checkpoint whose architecture the batched forward does not cover falls back to FunASR's
    loop with a warning."""
    opts = opts or EngineOptions()
    try:
        engine = get_engine(lm, opts)
    except Unsupported as e:
        log.warning("batched engine unavailable for %s (%s); using FunASR's loop", lm.name, e)
        outs = reference_infer(lm, waves, frame_feats=frame_feats)
        if progress is not None:
            progress(len(waves), len(waves))
        return outs
    return engine.run(waves, progress, opts=opts, frame_feats=frame_feats)


def int8_agreement(lm: LoadedModel, waves: list[np.ndarray]) -> dict:
    """How far int8 dynamic quantization moves the outputs from fp32 on `waves`."""
    ref = get_engine(lm, EngineOptions(warmup=False)).run(waves, frame_feats=True)
    q = Engine(lm, EngineOptions(quantize=True, warmup=False)).run(waves, frame_feats=True)
    return compare(ref, q)


def compare(ref: list[Output], got: list[Output]) -> dict:
    """Max |Δ| of frame features (None unless both carry them) and scores, and how often the
    top label agrees."""
    with_feats = all(o.frame_feats is not None for o in (*ref, *got))
    return {
        "feats_max_abs": max(float(np.abs(a.frame_feats - b.frame_feats).max())
                             for a, b in zip(ref, got)) if with_feats else None,
        "scores_max_abs": max(float(np.abs(a.scores - b.scores).max()) for a, b in zip(ref, got)),
        "label_agreement": float(np.mean([int(np.argmax(a.scores)) == int(np.argmax(b.scores))
                                          for a, b in zip(ref, got)])),
        "n": len(ref),
    }


__all__ = ["Engine", "EngineOOM", "EngineOptions", "compare", "fp32_exact", "get_engine",
           "infer", "int8_agreement", "plan", "warm_up"]
