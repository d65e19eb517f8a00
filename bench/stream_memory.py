"""Benchmark: memory of the API process after one long live stream, with freed memory handed
back to the system at the stream's end (api.stream.give_back_memory) and without.

    python bench/stream_memory.py                 # 10 minutes of speech, tiny-random, CPU
    python bench/stream_memory.py --minutes 60

Each variant runs in a fresh process (the app in-process through Starlette's test client): a
short warm-up stream, then RSS, then one stream of `--minutes` of espeak-ng speech sent as
fast as the server takes it, then RSS once the server has closed the stream. Prints RSS
before, after and the difference per variant; the last line is `ratio: X.XX` (MiB kept
without ÷ with, at least 1 MiB each). A benchmark, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/api.py would shadow the `api` package: the project root comes first instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def one_variant(minutes: float, give_back: bool) -> dict:
    import numpy as np
    from fastapi.testclient import TestClient

    import api.stream
    from api.app import create_app
    from api.batcher import Batcher
    from api.runtime import Runtime, engine_run
    from api.settings import Settings
    from bench.speech import espeak_pieces
    from core.rules import load_rules
    from ingest.model import load
    from ingest.options import IngestOptions

    if not give_back:
        api.stream.LONG_STREAM_S = float("inf")
    lm = load("tiny-random", "cpu")
    settings = Settings(model="tiny-random", device="cpu", db=Path("/nonexistent/x.duckdb"),
                        volatility_reference={"customer": (0.0,) * 20}, stream_idle_s=600)
    rt = Runtime(settings, lm, load_rules(), IngestOptions(),
                 Batcher(engine_run(lm, None), batch_seconds=30, max_wait_ms=0, max_queue=8,
                         timeout_s=60))
    gap = np.zeros(12_800, np.float32)
    speech = np.concatenate([x for p in espeak_pieces()[:6] for x in (p, gap)])
    block = 4 * 16_000
    speech = np.tile(speech, -(-block // speech.size))[:block]
    chunk = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()

    with TestClient(create_app(settings, runtime=rt), client=("127.0.0.1", 1),
                    base_url="http://localhost") as c:
        def stream(n_chunks: int) -> None:
            with c.websocket_connect("ws://localhost/v1/stream?role=customer") as ws:
                ws.receive_json()
                for _ in range(n_chunks):
                    ws.send_bytes(chunk)
                ws.send_text('{"type": "end"}')
                while ws.receive_json()["type"] != "final":
                    pass
            while rt.streams:
                time.sleep(0.01)

        stream(16)  # 64 s: warm-up
        before = rss_mib()
        t = time.perf_counter()
        stream(int(minutes * 15))
        took = time.perf_counter() - t
        after = rss_mib()
    return {"before": before, "after": after, "kept": after - before, "s": took}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--variant", choices=["with", "without"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant:
        print(json.dumps(one_variant(a.minutes, a.variant == "with")))
        return
    print(f"one stream of {a.minutes:g} min of speech (tiny-random, CPU); RSS of the process")
    kept = {}
    for variant in ("without", "with"):
        out = subprocess.run([sys.executable, __file__, "--minutes", str(a.minutes),
                              "--variant", variant], capture_output=True, text=True,
                             cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        kept[variant] = r["kept"]
        print(f"{variant:>7} handing memory back: before {r['before']:.0f} MiB, after "
              f"{r['after']:.0f} MiB, kept {r['kept']:+.0f} MiB (stream took {r['s']:.1f} s)")
    print(f"ratio: {max(kept['without'], 1) / max(kept['with'], 1):.2f}")


if __name__ == "__main__":
    main()
