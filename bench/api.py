"""Benchmark: the HTTP API under concurrent load, micro-batching on against off.

    python bench/api.py                                  # base shapes, CPU, 1/8/32 clients
    python bench/api.py --model tiny-random --requests 16,32,64
    python bench/api.py --model-shape large --device cuda --requests 64,256,1024

Two servers start on loopback (uvicorn, `api.server.serve`), one with batching and one
without, on the same random-weight checkpoint with the true shapes of emotion2vec_plus_base
(or _large; `--model` takes any model instead). Clients post distinct 5-s espeak-ng clips to
/v1/predict: for each concurrency level a fixed number of requests, the two servers in turn
(in A/B rounds, the order alternating, so a busy machine slows both alike). The client runs in
this process, on the same machine. The table gives p50/p95 latency, throughput, the mean number of
requests per forward pass and the server's CPU time per request (which depends far less than
wall time on what else the machine runs); the last line is `ratio: X.XX` (batched ÷
unbatched throughput at the highest concurrency). A benchmark, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SR = 16_000
AUTH: dict[str, str] = {}  # the API key header every request carries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def clips(n: int, seconds: float) -> list[bytes]:
    """n distinct clips cut from a pool of espeak-ng speech (bench/inference.py's pool)."""
    from inference import speech_pool

    pool, rng = speech_pool(), np.random.default_rng(0)
    size = int(seconds * SR)
    return [wav_bytes(pool[s:s + size] + rng.normal(0, 1e-3, size).astype(np.float32))
            for s in rng.integers(0, pool.size - size, n)]


class Server:
    """One API server in a subprocess, over a store of its own that has one API key: callers
    authenticate as they would in production (the key's check is in every request's time)."""

    def __init__(self, model: str, device: str, batching: bool, batch_seconds: float | None,
                 max_wait_ms: float, db: Path):
        self.port = free_port()
        self.batching = batching
        opts = {"batching": batching, "max_queue": 256, "request_timeout_s": 600.0,
                "max_wait_ms": max_wait_ms, "db": str(db)}
        if batch_seconds:
            opts["batch_seconds"] = batch_seconds
        code = ("from api.server import serve; "
                f"serve(port={self.port}, model={model!r}, device={device!r}, "
                f"log_level='warning', **{opts!r})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                                     env=os.environ | {"PYTHONPATH": str(ROOT)})
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, client, timeout_s: float = 600) -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            try:
                r = await client.get(self.url + "/v1/health/ready")
                if r.status_code == 200:
                    return r.json()
            except Exception:  # noqa: BLE001 — not listening yet
                pass
            await asyncio.sleep(0.5)
        raise SystemExit("server did not become ready")

    def cpu_s(self) -> float:
        """CPU seconds the server has used (all its threads): what a request costs, whatever
        share of the machine other processes take meanwhile."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(server: Server, bodies: list[bytes], clients: int, n: int,
               first: int = 0) -> dict:
    """n requests from `clients` concurrent clients; latency per request, wall time.

    A fresh connection pool per round: a kept-alive connection left idle while the other
    server is measured would be closed by this one under a reused request."""
    import httpx

    lat, codes, nxt = [], [], iter(range(first, first + n))

    async def worker(client):
        for i in nxt:
            t = time.perf_counter()
            try:
                r = await client.post(server.url + "/v1/predict", files={
                    "audio": (f"clip{i}.wav", bodies[i % len(bodies)], "audio/wav")})
                codes.append(r.status_code)
            except httpx.HTTPError as e:
                codes.append(type(e).__name__)
            lat.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(timeout=900, limits=limits, headers=AUTH) as client:
        before = (await client.get(server.url + "/v1/health/ready")).json()["batcher"]
        t0, cpu0 = time.perf_counter(), server.cpu_s()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall, cpu = time.perf_counter() - t0, server.cpu_s() - cpu0
        after = (await client.get(server.url + "/v1/health/ready")).json()["batcher"]
    if codes.count(200) < n:
        print(f"  {n - codes.count(200)} of {n} requests failed: "
              f"{sorted(set(map(str, codes)) - {'200'})}", file=sys.stderr)
    batches = after["batches"] - before["batches"]
    reqs = after["requests"] - before["requests"]
    return {"lat": lat, "ok": codes.count(200), "n": n, "wall": wall, "cpu": cpu,
            "batches": batches, "reqs": reqs}


def merged(parts: list[dict]) -> dict:
    """One level's rounds for one server, summed."""
    lat_ms = np.array([x for p in parts for x in p["lat"]]) * 1e3
    n, wall = sum(p["n"] for p in parts), sum(p["wall"] for p in parts)
    batches, reqs = sum(p["batches"] for p in parts), sum(p["reqs"] for p in parts)
    return {"ok": sum(p["ok"] for p in parts), "n": n, "p50": float(np.percentile(lat_ms, 50)),
            "p95": float(np.percentile(lat_ms, 95)), "rps": n / wall,
            "cpu": sum(p["cpu"] for p in parts) / n,
            "batch": reqs / batches if batches else float("nan")}


async def main_async(args) -> None:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request

    levels = [int(c) for c in args.clients.split(",")]
    counts = [int(c) for c in args.requests.split(",")]
    if len(counts) != len(levels):
        raise SystemExit("--requests needs one count per --clients level")
    if args.model:
        model, what = args.model, args.model
    else:
        from ingest.tiny import SHAPES, build
        dim, heads, depth, prenet, _ = SHAPES[args.model_shape]
        model = str(build(args.model_shape))
        what = (f"random weights, emotion2vec_plus_{args.model_shape} shapes "
                f"({dim}-dim, {depth + prenet} blocks)")
    t0 = time.perf_counter()
    bodies = clips(max(counts), args.clip_seconds)
    home = Path(tempfile.mkdtemp(prefix="emoscope-bench-api-"))
    db = home / "emoscope.duckdb"
    from core.guard import apikeys
    AUTH["Authorization"] = "Bearer " + apikeys.create(db, "bench", "supervisor", ["bench"])
    servers = {b: Server(model, args.device, b, args.batch_seconds, args.max_wait_ms, db)
               for b in (True, False)}
    rows = []
    try:
        async with httpx.AsyncClient(timeout=60) as c:
            info = [await s.ready(c) for s in servers.values()]
        for s in servers.values():  # first requests grow the allocator; not measured
            await load(s, bodies, 2, 4)
        setup = time.perf_counter() - t0
        step = 0
        for clients, n in zip(levels, counts):
            # Rounds of at least `clients` requests, the servers in A B B A order, so a
            # machine that gets busier or quieter meanwhile weighs on both alike.
            rounds = max(1, min(args.rounds, n // clients))
            parts: dict[bool, list] = {True: [], False: []}
            for k in range(rounds):
                size = n // rounds + (1 if k < n % rounds else 0)
                for batching in ((True, False) if step % 2 == 0 else (False, True)):
                    parts[batching].append(await load(servers[batching], bodies,
                                                      clients, size, first=k * size))
                step += 1
            for batching in (True, False):
                r = merged(parts[batching])
                rows.append((batching, clients, r))
                print(f"  {'batched' if batching else 'unbatched':<10} {clients:>3} clients: "
                      f"{r['rps']:.2f} req/s", file=sys.stderr, flush=True)
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(home, ignore_errors=True)

    print(f"model: {what}; device {info[0]['device']}; {os.cpu_count()} CPUs here "
          f"(client and servers share them)")
    print(f"clips: {args.clip_seconds:g} s, distinct, WAV PCM16; setup {setup:.0f} s; "
          f"batching: up to the engine budget or {args.max_wait_ms:g} ms wait; every request "
          "carries an API key")
    print()
    head = (f"{'mode':<10}{'clients':>8}{'requests':>9}{'ok':>5}{'p50 ms':>9}{'p95 ms':>9}"
            f"{'req/s':>8}{'audio-s/s':>11}{'per pass':>10}{'CPU-s/req':>11}")
    print(head)
    print("-" * len(head))
    for clients in levels:
        for batching in (True, False):
            r = next(x for b, c, x in rows if b == batching and c == clients)
            print(f"{'batched' if batching else 'unbatched':<10}{clients:>8}{r['n']:>9}"
                  f"{r['ok']:>5}{r['p50']:>9.0f}{r['p95']:>9.0f}{r['rps']:>8.2f}"
                  f"{r['rps'] * args.clip_seconds:>11.1f}{r['batch']:>10.1f}{r['cpu']:>11.2f}")
    top = max(levels)
    on = next(x for b, c, x in rows if b and c == top)
    off = next(x for b, c, x in rows if not b and c == top)
    print(f"CPU per request at {top} clients, unbatched ÷ batched: {off['cpu'] / on['cpu']:.2f}")
    print(f"ratio: {on['rps'] / off['rps']:.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a model name, directory or tiny-random (default: random "
                                    "weights in --model-shape)")
    ap.add_argument("--model-shape", choices=["base", "large"], default="base")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", default="4,16,64", help="requests per level")
    ap.add_argument("--rounds", type=int, default=2,
                    help="A/B rounds per level (each at least one request per client)")
    ap.add_argument("--clip-seconds", type=float, default=5.0)
    ap.add_argument("--batch-seconds", type=float, default=None,
                    help="batch budget in audio-seconds (default: the engine's per device)")
    ap.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="how long the batcher waits for company when the queue is empty")
    asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
