"""Batched emotion2vec+ inference that reproduces FunASR's per-waveform output.

    from ingest.engine import infer
    outputs = infer(lm, waves)            # list[Output], same order and meaning as
                                          # ingest.model.reference_infer(lm, waves)

The math lives in `ingest.batched` (mask-exact batched forward over the FunASR module's own
weights). This module decides what runs together and how:

* length bucketing: segments sorted longest first, cut into batches whose padded size
  (count × longest) fits a budget of audio-seconds and whose padding stays under `max_waste`;
* out of memory: the batch is halved and retried; a single segment that still does not fit
  raises `EngineOOM` naming it;
* speed: `torch.inference_mode`; SDPA attention (one padded call per block on CUDA, one call
  per sample on CPU); bf16 (or fp16) autocast on CUDA; pinned host memory and non-blocking
  host-to-device copies on CUDA; optional `torch.compile` of the fusable pieces (block tails,
  extractor norms); optional int8 dynamic quantization of the transformer linears on CPU;
  warm-up at creation; on CPU, no more torch threads than cores (FunASR sets 4).

Where the time goes on a quiet 2-core CPU (base shapes, fp32): ~15 GFLOP per audio-second,
~2/3 of it transformer GEMMs and ~1/3 the conv extractor (as GEMMs here). FunASR's loop already
runs them at ~125 GFLOPS; the engine at ~160 of the ~175 these cores reach in fp32 GEMMs, so
exact fp32 arithmetic caps the CPU gain near 1.4×. On a contended machine the gap is wider:
FunASR's thousands of small ops each wait on both cores; the engine issues few, large ones.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ingest.batched import MIN_SAMPLES, Batch, BatchedEmotion2vec, Unsupported
from ingest.model import LoadedModel, Output, head, reference_infer

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
Progress = Callable[[int, int], None]  # (segments done, segments total)


class EngineOOM(RuntimeError):
    """Out of memory even for the smallest batch the engine could make."""


@dataclass(frozen=True)
class EngineOptions:
    batch_seconds: float | None = None  # padded audio-seconds per batch; None → per device
    max_waste: float = 0.2  # largest share of a batch that may be padding
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16
    compile: bool = False  # torch.compile the transformer blocks
    quantize: bool = False  # int8 dynamic quantization of the transformer linears (CPU only)
    attention: str = "auto"  # auto (varlen on CPU, padded on CUDA), padded, varlen
    warmup: bool = True


def default_batch_seconds(device: str) -> float:
    """CPU: ~1,500 tokens, plenty for efficient GEMMs while the largest temporaries stay in
    the allocator's reusable range. CUDA: scaled to free memory (~60 MB per audio-second)."""
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


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg
                                            or "can't allocate memory" in msg)


class Engine:
    """Batched inference for one loaded model on its device."""

    def __init__(self, lm: LoadedModel, opts: EngineOptions = EngineOptions()):
        self.lm, self.opts = lm, opts
        self.device = torch.device(lm.device)
        self.cuda = self.device.type == "cuda"
        self.net = BatchedEmotion2vec(lm.module)
        self.net.extract_frames = 3000 if self.cuda else 1000  # 60 s or 20 s windows
        self.dtype = self._dtype(opts.precision)
        self.attention = opts.attention if opts.attention != "auto" else (
            "padded" if self.cuda else "varlen")
        if self.attention not in ("padded", "varlen"):
            raise ValueError(f"attention must be auto, padded or varlen, not {opts.attention!r}")
        self.budget_s = opts.batch_seconds or default_batch_seconds(lm.device)
        self.pin = self.cuda and torch.cuda.is_available()
        self._lock = threading.Lock()
        if opts.quantize:
            self._quantize()
        if opts.compile:
            self.net.compile(dynamic=True)
        if opts.warmup:
            self.warm_up()

    def _dtype(self, precision: str) -> torch.dtype:
        if precision == "auto":
            precision = "bf16" if self.cuda else "fp32"
        if precision == "bf16" and self.cuda and not torch.cuda.is_bf16_supported():
            precision = "fp16"
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        return dtypes[precision]

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _quantize(self) -> None:
        """Swap the transformer linears for int8 dynamic ones (seed §5.1), CPU only. The fp32
        originals stay in FunASR's module; the engine keeps int8 weights beside them."""
        if self.cuda:
            raise ValueError("int8 dynamic quantization runs on CPU only")
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
        """One small batch through every kernel (and the compiler), so the first real batch
        is not the one that pays for initialisation."""
        rng = np.random.default_rng(0)
        waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (24_000, 8_000)]
        self.run(waves)

    # -- host side -----------------------------------------------------------------------
    def _batch(self, waves: list[np.ndarray]) -> Batch:
        """Each waveform layer-normalised over its own length (FunASR's `F.layer_norm(source,
        source.shape)`), laid end to end on the stride grid, in pinned memory on CUDA."""
        lengths = [int(w.shape[0]) for w in waves]
        offsets, total = self.net.layout(lengths)
        stream = torch.zeros(total, dtype=torch.float32, pin_memory=self.pin)
        for w, o in zip(waves, offsets):
            x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
            if self.lm.module.cfg.normalize:
                x = F.layer_norm(x, x.shape)
            stream[o:o + x.shape[0]] = x
        stream = stream.to(self.device, non_blocking=True)
        return Batch(lengths, [self.net.frames(n) for n in lengths], stream, offsets)

    # -- device side ---------------------------------------------------------------------
    def _forward(self, waves: list[np.ndarray]) -> list[Output]:
        batch = self._batch(waves)
        with self._autocast():
            feats = self.net.features(batch, self.dtype, self.attention)
        feats = feats.float()
        logits = head(self.lm, feats)  # (N, 9), unused slots -inf
        counts = torch.tensor(batch.n_frames, device=feats.device)
        ids = torch.repeat_interleave(torch.arange(len(waves), device=feats.device), counts)
        emb = feats.new_zeros(len(waves), feats.shape[1]).index_add_(0, ids, feats)
        emb = emb / counts[:, None].to(emb.dtype)
        # FunASR: softmax(proj(mean of frames)) with unused labels at -inf.
        scores = torch.softmax(head(self.lm, emb), dim=-1)
        # Synchronous copies back: the outputs live on in pageable memory, not pinned.
        f, lg, sc, em = (t.cpu().numpy() for t in (feats, logits, scores, emb))
        cuts = np.cumsum(batch.n_frames)[:-1]
        return [Output(a, b, s, e) for a, b, s, e in
                zip(np.split(f, cuts), np.split(lg, cuts), sc, em)]

    def _run_batch(self, waves: list[np.ndarray], idx: list[int], first: int) -> list[Output]:
        try:
            return self._forward([waves[i] for i in idx])
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
            return (self._run_batch(waves, idx[:half], first)
                    + self._run_batch(waves, idx[half:], first))

    def run(self, waves: list[np.ndarray], progress: Progress | None = None,
            batch_seconds: float | None = None) -> list[Output]:
        """Outputs for `waves` (1-D float32 16 kHz), in their order."""
        waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves]
        for i, w in enumerate(waves):
            if w.shape[0] < MIN_SAMPLES:
                raise ValueError(f"segment #{i} has {w.shape[0]} samples; emotion2vec needs at "
                                 f"least {MIN_SAMPLES} ({MIN_SAMPLES / SAMPLE_RATE * 1e3:.0f} ms)")
        budget = int((batch_seconds or self.budget_s) * SAMPLE_RATE)
        if not self.cuda and torch.get_num_threads() > cpu_cores():
            # FunASR's AutoModel sets 4 threads (its `ncpu` default) at load and on every
            # generate(); more threads than cores only makes GEMMs fight over them.
            torch.set_num_threads(cpu_cores())
        out: list[Output | None] = [None] * len(waves)
        done = 0
        with self._lock, torch.inference_mode():
            for idx in plan([w.shape[0] for w in waves], budget, self.opts.max_waste):
                for i, o in zip(idx, self._run_batch(waves, idx, len(idx))):
                    out[i] = o
                done += len(idx)
                if progress is not None:
                    progress(done, len(waves))
        return out  # type: ignore[return-value]


_ENGINES: dict[tuple, tuple[LoadedModel, Engine]] = {}


def get_engine(lm: LoadedModel, opts: EngineOptions = EngineOptions()) -> Engine:
    """One engine per (loaded model, options), created (and warmed up) on first use."""
    key = (id(lm), opts)
    hit = _ENGINES.get(key)
    if hit is None or hit[0] is not lm:
        hit = _ENGINES[key] = (lm, Engine(lm, opts))
    return hit[1]


def warm_up(lm: LoadedModel, **opts) -> None:
    """Create and warm the engine right after loading the model (seed §5.1)."""
    try:
        get_engine(lm, EngineOptions(**opts))
    except Unsupported as e:
        log.warning("batched engine unavailable for %s (%s)", lm.name, e)


def infer(lm: LoadedModel, waves: list[np.ndarray], *, batch_seconds: float | None = None,
          progress: Progress | None = None, **opts) -> list[Output]:
    """Drop-in for `reference_infer(lm, waves)`: same outputs, batched.

    Options: see `EngineOptions` (precision, compile, quantize, max_waste, warmup). A
    checkpoint whose architecture the batched forward does not cover falls back to FunASR's
    loop with a warning."""
    try:
        engine = get_engine(lm, EngineOptions(**opts))
    except Unsupported as e:
        log.warning("batched engine unavailable for %s (%s); using FunASR's loop", lm.name, e)
        outs = reference_infer(lm, waves)
        if progress is not None:
            progress(len(waves), len(waves))
        return outs
    return engine.run(waves, progress, batch_seconds)


def int8_agreement(lm: LoadedModel, waves: list[np.ndarray]) -> dict:
    """How far int8 dynamic quantization moves the outputs from fp32 on `waves`."""
    ref = get_engine(lm, EngineOptions(warmup=False)).run(waves)
    q = Engine(lm, EngineOptions(quantize=True, warmup=False)).run(waves)
    return compare(ref, q)


def compare(ref: list[Output], got: list[Output]) -> dict:
    """Max |Δ| of frame features and scores, and how often the top label agrees."""
    return {
        "feats_max_abs": max(float(np.abs(a.frame_feats - b.frame_feats).max())
                             for a, b in zip(ref, got)),
        "scores_max_abs": max(float(np.abs(a.scores - b.scores).max()) for a, b in zip(ref, got)),
        "label_agreement": float(np.mean([int(np.argmax(a.scores)) == int(np.argmax(b.scores))
                                          for a, b in zip(ref, got)])),
        "n": len(ref),
    }


__all__ = ["Engine", "EngineOOM", "EngineOptions", "compare", "get_engine", "infer",
           "int8_agreement", "plan", "warm_up"]
