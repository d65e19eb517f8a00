"""Benchmark: FunASR's per-waveform loop against Emoscope's batched engine, same segments.

    python bench/inference.py --model-shape base --audio-seconds 120 --device cpu
    python bench/inference.py --model-shape large --audio-seconds 1800 --device cuda \
        --speech speech.flac --profile /tmp/prof

Random-weight checkpoints with the true shapes of emotion2vec_plus_base (768-dim, 12 blocks,
~93 M parameters) or emotion2vec_plus_large (1024-dim, 24 blocks, ~313 M) are built once into
the cache and loaded through FunASR. Segments of 1–15 s are cut from espeak-ng speech, or from
`--speech FILE` where espeak-ng is missing (make one with `--save-speech FILE.flac`). The two
paths run interleaved (A/B on each chunk, order alternating) so that a busy machine slows both
alike; each returns what the pipeline stores (the engine without per-frame features).

The table gives throughput (audio-seconds per wall second), peak memory, and how far the engine
is from FunASR: the timed engine's scores and labels (bf16 on CUDA by default), and an fp32
check — the engine in fp32 with frame features against FunASR, both with TF32 off — for
max |Δfeat|, max |Δscore| and label agreement. `--profile DIR` writes a torch.profiler trace
and key_averages tables of one engine chunk there. The last line is `ratio: X.XX` (engine
throughput ÷ FunASR throughput). A benchmark, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.speech import SR, espeak_pieces  # noqa: E402


def speech_pool(path: str | None = None) -> np.ndarray:
    """A few minutes of speech, 16 kHz float32: from `path` (.npy, or any audio PyAV reads)
    or made with espeak-ng in several voices."""
    if path:
        if path.endswith(".npy"):
            return np.load(path).astype(np.float32).reshape(-1)
        from core.media.audio import decode
        return decode(path).samples.mean(axis=0).astype(np.float32)
    rng = np.random.default_rng(0)
    parts = [y for x in espeak_pieces()
             for y in (x * rng.uniform(0.3, 1.0), np.zeros(int(rng.uniform(0.1, 0.6) * SR)))]
    return np.concatenate(parts).astype(np.float32)


def save_speech(pool: np.ndarray, path: str) -> None:
    """The speech pool as .npy (float32) or, for any other suffix, 16-bit FLAC."""
    if path.endswith(".npy"):
        np.save(path, pool)
        return
    from fractions import Fraction

    import av
    with av.open(path, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=SR)
        stream.layout, stream.format = "mono", "s16"
        pcm = (np.clip(pool, -1, 1) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.time_base, frame.pts = SR, Fraction(1, SR), 0
        for pkt in stream.encode(frame):
            out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)


def segments(pool: np.ndarray, total_s: float, seed: int = 0) -> list[np.ndarray]:
    """Segments of 1–15 s (uniform) cut at random places from the speech pool."""
    rng = np.random.default_rng(seed)
    out, got = [], 0.0
    while got < total_s:
        n = int(rng.uniform(1.0, 15.0) * SR)
        start = int(rng.integers(0, pool.size - n))
        x = pool[start:start + n] + rng.normal(0, 1e-3, n).astype(np.float32)
        out.append(x)
        got += n / SR
    return out


class CudaPeak:
    """Peak CUDA memory allocated over a block, above what was allocated before it."""

    def __init__(self, device: str):
        self.on = device.startswith("cuda")
        self.peak = 0

    def __enter__(self):
        if self.on:
            import torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        if self.on:
            import torch
            torch.cuda.synchronize()
            self.peak = max(self.peak, torch.cuda.max_memory_allocated() - self.base)
        return False


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_growth(fn) -> int:
    """Peak growth of this process's RSS while `fn` runs (sampled every 5 ms)."""
    base, top, stop = _rss(), [0], []

    def sample():
        while not stop:
            top[0] = max(top[0], _rss())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        stop.append(1)
        t.join()
    return max(top[0], _rss()) - base


def _passthrough(args) -> list[str]:
    """The options a probe process needs to rebuild the same paths."""
    cmd = ["--model-shape", args.model_shape, "--audio-seconds", str(args.audio_seconds),
           "--precision", args.precision, "--attention", args.attention,
           "--extractor", args.extractor]
    for flag, value in (("--batch-seconds", args.batch_seconds), ("--speech", args.speech)):
        if value:
            cmd += [flag, str(value)]
    return cmd + (["--compile"] if args.compile else [])


def cpu_peaks(args, names: list[str], seconds: float) -> dict[str, int]:
    """Each path's RSS growth on one chunk, each in a fresh process (the allocator keeps
    freed memory, so in one process the second path would reuse the first one's)."""
    out = {}
    for name in names:
        cmd = [sys.executable, __file__, *_passthrough(args), "--probe", name,
               "--probe-seconds", str(seconds)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("peak_rss_bytes ")]
        out[name] = int(lines[-1].split()[1]) if lines else -1
    return out


def fair_threads(lm, device: str) -> int:
    """Give FunASR's loop as many threads as the engine: one per usable core. (AutoModel
    defaults to ncpu=4 and re-applies it on every generate(); on a 2-core machine that
    oversubscribes the cores and would flatter the engine.)"""
    import torch

    from ingest.engine import cpu_cores

    n = cpu_cores()
    if device == "cpu":
        auto = lm.automodel
        for d in (auto.kwargs, getattr(auto, "_base_kwargs_map", {}).get("kwargs", {})):
            d["ncpu"] = n
        torch.set_num_threads(n)
    return n


def chunks(waves: list[np.ndarray], seconds: float) -> list[list[int]]:
    """Consecutive groups of about `seconds` of audio (the A/B unit)."""
    out, cur, size = [], [], 0.0
    for i, w in enumerate(waves):
        cur.append(i)
        size += w.size / SR
        if size >= seconds:
            out.append(cur)
            cur, size = [], 0.0
    if cur:
        out.append(cur)
    return out


def profile_engine(run, waves: list[np.ndarray], device: str, out_dir: str) -> str:
    """torch.profiler over `run(waves)` (warm); trace and key_averages tables into out_dir."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with profile(activities=acts) as prof:
        run(waves)
        if cuda:
            torch.cuda.synchronize()
    prof.export_chrome_trace(str(Path(out_dir) / "trace.json"))
    ev = prof.key_averages()
    tables = []
    for key in (["self_cuda_time_total"] if cuda else []) + ["self_cpu_time_total"]:
        tables.append(f"sorted by {key}\n" + ev.table(sort_by=key, row_limit=30))
    (Path(out_dir) / "key_averages.txt").write_text("\n\n".join(tables) + "\n")
    count = {e.key: e.count for e in ev}
    launches = sum(count.get(k, 0) for k in ("cudaLaunchKernel", "cuLaunchKernelEx",
                                             "cudaLaunchKernelExC"))
    dtoh = sum(c for k, c in count.items() if k.startswith("Memcpy DtoH"))
    aten = sum(c for k, c in count.items() if k.startswith("aten::"))
    return (f"profile of {sum(w.size for w in waves) / SR:.0f} audio-s in {out_dir}: "
            f"{aten} aten ops, {launches} kernel launches, {dtoh} device→host copies, "
            f"{count.get('aten::to', 0)} aten::to")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-shape", choices=["base", "large"], default="base")
    ap.add_argument("--audio-seconds", type=float, default=120.0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", default="auto", help="engine: auto, fp32, bf16, fp16")
    ap.add_argument("--attention", default="auto", help="engine: auto, flex, padded, varlen")
    ap.add_argument("--extractor", default="auto", help="engine: auto, cudnn, gemm")
    ap.add_argument("--batch-seconds", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the segments")
    ap.add_argument("--chunk-seconds", type=float, default=None,
                    help="A/B unit (default: the engine's batch budget)")
    ap.add_argument("--compile", action="store_true", help="engine with torch.compile")
    ap.add_argument("--int8", action="store_true",
                    help="also run the engine with int8 dynamic quantization (CPU)")
    ap.add_argument("--speech", help="speech to cut segments from (.npy or audio) instead of "
                                     "espeak-ng")
    ap.add_argument("--save-speech", help="write the espeak-ng speech pool here (.npy or "
                                          ".flac) and exit")
    ap.add_argument("--profile", metavar="DIR", help="torch.profiler trace + tables here")
    ap.add_argument("--check-seconds", type=float, default=None,
                    help="audio for the fp32 check (default: all segments)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one path's CPU memory
    ap.add_argument("--probe-seconds", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.save_speech:
        pool = speech_pool()
        save_speech(pool, args.save_speech)
        print(f"wrote {pool.size / SR:.0f} s of speech to {args.save_speech}")
        return

    import torch

    from ingest.engine import Engine, EngineOptions, compare, fp32_exact
    from ingest.model import load, reference_infer
    from ingest.tiny import SHAPES, build

    t0 = time.perf_counter()
    path = build(args.model_shape)
    lm = load(str(path), args.device)
    n_params = sum(p.numel() for p in lm.module.parameters()) / 1e6
    pool = speech_pool(args.speech)
    waves = segments(pool, args.audio_seconds)
    audio_s = sum(w.size for w in waves) / SR
    threads = fair_threads(lm, args.device)
    engine_opts = dict(batch_seconds=args.batch_seconds, precision=args.precision,
                       attention=args.attention, extractor=args.extractor, compile=args.compile)

    def make(name: str):
        if name == "funasr loop":
            return lambda ws: reference_infer(lm, ws)
        return Engine(lm, EngineOptions(**engine_opts, quantize=name == "engine int8")).run

    names = ["funasr loop", "engine"] + (["engine int8"] if args.int8 else [])
    if args.probe:  # a fresh process measuring one path's memory on one chunk
        run = make(args.probe)
        run(waves[:1])
        first = chunks(waves, args.probe_seconds)[0]
        print("peak_rss_bytes", rss_growth(lambda: run([waves[i] for i in first])))
        return
    paths = {n: make(n) for n in names}
    eng = paths["engine"].__self__
    reference_infer(lm, waves[:1])  # warm the reference too
    setup_s = time.perf_counter() - t0

    groups = chunks(waves, args.chunk_seconds or eng.budget_s)
    wall = dict.fromkeys(names, 0.0)
    peak = dict.fromkeys(names, 0)
    outs: dict[str, list] = {n: [None] * len(waves) for n in names}
    step = 0
    for _ in range(args.rounds):
        for g in groups:
            order = names if step % 2 == 0 else names[::-1]
            step += 1
            for name in order:
                ws = [waves[i] for i in g]
                with CudaPeak(args.device) as mem:
                    t = time.perf_counter()
                    res = paths[name](ws)
                    wall[name] += time.perf_counter() - t
                peak[name] = max(peak[name], mem.peak)
                for i, o in zip(g, res):
                    outs[name][i] = o

    # fp32 check: frame features too, TF32 off on both sides (cuDNN defaults to TF32)
    check = list(range(len(waves)))
    if args.check_seconds:
        check = chunks(waves, args.check_seconds)[0]
    check_waves = [waves[i] for i in check]
    with fp32_exact():
        fp32 = Engine(lm, EngineOptions(**{**engine_opts, "precision": "fp32"}))
        ref32 = reference_infer(lm, check_waves, frame_feats=True)
        got32 = fp32.run(check_waves, frame_feats=True)
    del fp32

    profile_line = None
    if args.profile:
        profile_line = profile_engine(paths["engine"], [waves[i] for i in groups[0]],
                                      args.device, args.profile)

    if args.device == "cpu":  # RSS growth, each path alone in a fresh process
        peak = cpu_peaks(args, names, eng.budget_s)
    dim, heads, depth, prenet, _ = SHAPES[args.model_shape]
    lens = [w.size / SR for w in waves]
    dev = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"cpu, {threads} threads for both paths"
    print(f"model: random weights, emotion2vec_plus_{args.model_shape} shapes ({dim}-dim, "
          f"{depth + prenet} blocks, {heads} heads, {n_params:.1f} M parameters)")
    print(f"device: {dev}; torch {torch.__version__}")
    print(f"engine: precision {eng.dtype}, attention {eng.attention}, extractor "
          f"{eng.extractor}, batch budget {eng.budget_s:g} audio-s"
          f"{', compiled' if args.compile else ''}")
    print(f"audio: {len(waves)} {'--speech' if args.speech else 'espeak-ng'} segments, "
          f"{audio_s:.1f} s ({min(lens):.1f}–{max(lens):.1f} s); {args.rounds} round(s) × "
          f"{len(groups)} chunk(s), A/B interleaved; setup {setup_s:.0f} s")
    print()
    how = ("CUDA memory allocated" if args.device == "cuda" else
           f"RSS growth over one {eng.budget_s:g}-s chunk, each path in a fresh process")
    print(f"peak MB: {how}, above the loaded model")
    head = (f"{'path':<22}{'audio-s/s':>11}{'wall s':>9}{'peak MB':>10}{'max|Δfeat|':>13}"
            f"{'max|Δscore|':>13}{'labels':>10}")
    print(head)
    print("-" * len(head))

    def cols(c: dict) -> str:
        agree = f"{round(c['label_agreement'] * c['n'])}/{c['n']}"
        feat = "—" if c["feats_max_abs"] is None else f"{c['feats_max_abs']:.2e}"
        return f"{feat:>13}{c['scores_max_abs']:>13.2e}{agree:>10}"

    thr = {}
    for name in names:
        thr[name] = args.rounds * audio_s / wall[name]
        dev_cols = f"{'—':>13}{'—':>13}{'—':>10}" if name == "funasr loop" else \
            cols(compare(outs["funasr loop"], outs[name]))
        print(f"{name:<22}{thr[name]:>11.2f}{wall[name]:>9.1f}{peak[name] / 2**20:>10.0f}"
              + dev_cols)
    print(f"{'fp32 check, TF32 off':<22}{'—':>11}{'—':>9}{'—':>10}" + cols(compare(ref32, got32))
          + f"   ({sum(w.size for w in check_waves) / SR:.0f} audio-s)")
    if args.device == "cuda":
        print(f"CUDA memory: {torch.cuda.memory_allocated() / 2**30:.2f} GiB held after the run "
              f"(FunASR's fp32 weights + the engine's bf16 copy), peaks above it in the table; "
              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB on the card")
    if profile_line:
        print(profile_line)
    if "engine int8" in thr:
        print(f"int8 ratio vs funasr loop: {thr['engine int8'] / thr['funasr loop']:.2f}")
    print(f"ratio: {thr['engine'] / thr['funasr loop']:.2f}")


if __name__ == "__main__":
    main()
