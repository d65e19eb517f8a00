"""Benchmark: memory of the API process during and after long live streams.

    python bench/stream_memory.py                       # 30 min of speech, RSS at 5/10/20/30
    python bench/stream_memory.py --minutes 10 --marks 2,5,10 --streams 3
    python bench/stream_memory.py --trace               # + the Python allocations that grew

The app runs in this process (Starlette's test client), tiny-random on the CPU. After a short
warm-up stream: `--streams` streams, one after the other, each of `--minutes` of espeak-ng
speech sent as fast as the server takes it. During the first, RSS is read when the server has
heard each mark (its updates' `t_s`); after each, once the server has closed it. With
`--trace`, tracemalloc's top growth between the first mark and the last (and after the
stream) is printed: what Python code holds. A benchmark, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/api.py would shadow the `api` package: the project root comes first instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def top_growth(a, b, n: int = 8) -> list[str]:
    return [str(s) for s in b.compare_to(a, "lineno")[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--marks", default="5,10,20,30", help="minutes of audio to read RSS at")
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--trace", action="store_true")
    a = ap.parse_args()
    marks = sorted(float(m) for m in a.marks.split(",") if float(m) <= a.minutes)

    import numpy as np
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.batcher import Batcher
    from api.runtime import Runtime, engine_run
    from api.settings import Settings
    from bench.speech import espeak_pieces
    from core.analysis.rules import load_rules
    from ingest.model import load
    from ingest.options import IngestOptions

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
    if a.trace:
        import tracemalloc
        tracemalloc.start(8)

    with TestClient(create_app(settings, runtime=rt), client=("127.0.0.1", 1),
                    base_url="http://localhost") as c:
        def stream(minutes: float, at: list[float]) -> dict:
            """One stream; RSS (and a snapshot) when the server has heard each mark."""
            seen, todo = {}, list(at)
            n = int(minutes * 15)  # 4-s chunks
            with c.websocket_connect("ws://localhost/v1/stream?role=customer") as ws:
                ws.receive_json()
                for i in range(1, n + 1):
                    ws.send_bytes(chunk)
                    if todo and i * 4 >= todo[0] * 60:
                        while (m := ws.receive_json())["type"] != "update" or \
                                m["t_s"] < todo[0] * 60 - 0.5:
                            pass
                        gc.collect()
                        seen[todo.pop(0)] = (rss_mib(), tracemalloc.take_snapshot()
                                             if a.trace else None)
                ws.send_text('{"type": "end"}')
                while ws.receive_json()["type"] != "final":
                    pass
            while rt.streams:
                time.sleep(0.01)
            gc.collect()
            seen["closed"] = (rss_mib(), tracemalloc.take_snapshot() if a.trace else None)
            return seen

        stream(16 / 15, [])  # 64 s: warm-up
        gc.collect()
        before = rss_mib()
        print(f"{a.streams} stream(s) of {a.minutes:g} min of speech, tiny-random, CPU; "
              f"RSS of the process; before: {before:.0f} MiB")
        for k in range(a.streams):
            t = time.perf_counter()
            seen = stream(a.minutes, marks if k == 0 else [])
            took = time.perf_counter() - t
            during = " · ".join(f"{m:g} min {seen[m][0]:.0f}" for m in marks if m in seen)
            print(f"stream {k + 1} ({took:.0f} s): " + (f"{during} · " if during else "")
                  + f"closed {seen['closed'][0]:.0f} MiB ({seen['closed'][0] - before:+.0f})")
            if a.trace and k == 0 and len(marks) >= 2:
                print(f"  Python allocations grown from {marks[0]:g} to {marks[-1]:g} min:")
                print("\n".join("    " + x for x in top_growth(seen[marks[0]][1],
                                                                seen[marks[-1]][1])))
                print(f"  ... and from {marks[0]:g} min to closed:")
                print("\n".join("    " + x for x in top_growth(seen[marks[0]][1],
                                                                seen["closed"][1])))


if __name__ == "__main__":
    main()
