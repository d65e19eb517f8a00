"""Benchmark: what prosody (ingest/prosody.py, librosa) costs beside the emotion model.

    python bench/prosody.py                                # base shape, 120 s of speech, cpu
    python bench/prosody.py --audio-seconds 600 --model-shape large --device cuda

The same segments (1-15 s cut from espeak-ng speech, or `--speech FILE`) go through the
emotion model (the batched engine on random weights in emotion2vec_plus_base's or _large's
true shapes, ingest/tiny.py, as bench/inference.py) and through the prosody measurement, in
alternating chunks so a busy machine slows both alike. Both are given as seconds per audio
hour. Before that, two fresh processes time what a process pays before its first
measurement: librosa's numba kernels compiled into an empty cache (what the first run on a
machine pays), and loaded from the warm cache (every later process). The last line is
`ratio: X.XXX` (prosody's time ÷ the emotion model's, per audio hour). A benchmark, not a
test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.inference import chunks, fair_threads, segments, speech_pool  # noqa: E402
from bench.speech import SR  # noqa: E402

FIRST_CALL = """
import sys, time
t = time.perf_counter()
import numpy as np
from ingest.prosody import measure
measure(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
print(time.perf_counter() - t)
"""


def first_call(cache: str) -> float:
    """Seconds from a fresh process's start of work to its first measurement, with numba's
    cache at `cache` (model-free: the imports and kernels only)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--audio-seconds", type=float, default=120.0)
    ap.add_argument("--model-shape", choices=["base", "large"], default="base")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--speech", help="speech to cut segments from, where espeak-ng is missing")
    ap.add_argument("--chunk-seconds", type=float, default=30.0)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as cold:
        cold_s = first_call(cold)  # an empty cache: the compile
        warm_s = first_call(cold)  # the same cache, now filled
    print(f"first measurement in a fresh process: {cold_s:.1f} s with an empty numba cache "
          f"(compile), {warm_s:.1f} s with it warm (imports and cached kernels)")

    from ingest.engine import Engine
    from ingest.model import load
    from ingest.prosody import measure
    from ingest.tiny import build

    lm = load(str(build(args.model_shape)), args.device)
    fair_threads(lm, args.device)
    waves = segments(speech_pool(args.speech), args.audio_seconds)
    audio_s = sum(w.size for w in waves) / SR
    engine = Engine(lm)
    engine.run(waves[:1])  # warm both before the clock
    measure(waves[0], SR)

    wall = {"emotion": 0.0, "prosody": 0.0}
    run = {"emotion": engine.run, "prosody": lambda ws: [measure(w, SR) for w in ws]}
    for step, g in enumerate(chunks(waves, args.chunk_seconds)):
        ws = [waves[i] for i in g]
        for name in (("emotion", "prosody") if step % 2 == 0 else ("prosody", "emotion")):
            t = time.perf_counter()
            run[name](ws)
            wall[name] += time.perf_counter() - t

    print(f"{len(waves)} segments, {audio_s:.0f} s of speech; emotion2vec_plus_"
          f"{args.model_shape} shapes on {args.device}, {os.cpu_count()} cores")
    print(f"{'':10}{'wall s':>9}{'s per audio hour':>18}{'x real time':>13}")
    for name, w in wall.items():
        print(f"{name:10}{w:9.2f}{w / audio_s * 3600:18.1f}{audio_s / w:13.0f}")
    print(f"ratio: {wall['prosody'] / wall['emotion']:.3f}")


if __name__ == "__main__":
    main()
