"""How much busy dashboard readers slow the one writer, without and with the writer-first gate.

    .venv/bin/python bench/readers_writer.py                 # 3 readers, 30 writes, 300 sessions
    .venv/bin/python bench/readers_writer.py --read count    # short reads: many connections

The writer saves sessions (each with its analytics, as the worker does) into a store of a few
hundred synthetic sessions: first alone, then while reader processes run the overview's read
(Reader.summary) back to back. Both are measured with the gate off (readers and writer race
for DuckDB's file lock, as before) and on (core.storage.store: a writer holds the gate; readers wait at
it). Printed: seconds per write alone and with readers, and the slowdown ratio, for each.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.guard.access import operator  # noqa: E402
from core.storage.queries import Reader  # noqa: E402
from core.storage.sessions import SessionWriter  # noqa: E402
from core.storage.store import Store  # noqa: E402
from core.base.types import segment_id_for, session_id_for  # noqa: E402
from tests.store_fixtures import RULES  # noqa: E402
from tests.test_analytics_store import call  # noqa: E402


def session(k: int):
    r = call(k % 5, ["neutral", "angry", "neutral", "angry", "sad", "happy"] * 3,
             list(range(18)), day=1 + k % 28)
    sha = hashlib.sha256(f"bench-{k}".encode()).hexdigest()
    sid = session_id_for(sha)
    segs = tuple(dataclasses.replace(g, segment_id=segment_id_for(sid, g.channel, i))
                 for i, g in enumerate(r.segments))
    return dataclasses.replace(r, session_id=sid, sha256=sha, segments=segs)


def reader_loop(db: str, writer_first: bool, stop, counter, read: str) -> None:
    r = Reader(Store(db, retry_s=600, writer_first=writer_first), operator())
    while not stop.is_set():
        r.summary() if read == "summary" else r.n_sessions()
        with counter.get_lock():
            counter.value += 1


def writes(db: Path, writer_first: bool, first: int, n: int) -> float:
    """Seconds per save of n new sessions."""
    w = SessionWriter(Store(db, retry_s=600, writer_first=writer_first), RULES)
    t0 = time.perf_counter()
    for k in range(first, first + n):
        w.save(session(k), None)
    return (time.perf_counter() - t0) / n


def measure(db: Path, writer_first: bool, readers: int, n: int, first: int, read: str) -> dict:
    alone = writes(db, writer_first, first, n)
    ctx = mp.get_context("spawn")
    stop, counter = ctx.Event(), ctx.Value("i", 0)
    procs = [ctx.Process(target=reader_loop, args=(str(db), writer_first, stop, counter, read))
             for _ in range(readers)]
    for p in procs:
        p.start()
    while counter.value < 3 * readers:  # the readers are up and reading
        time.sleep(0.05)
    reads0 = counter.value
    t0 = time.perf_counter()
    busy = writes(db, writer_first, first + n, n)
    wall = time.perf_counter() - t0
    reads = counter.value - reads0
    stop.set()
    for p in procs:
        p.join()
    return {"writer_first": writer_first, "s_per_write_alone": round(alone, 4),
            "s_per_write_with_readers": round(busy, 4), "slowdown": round(busy / alone, 2),
            "reads_per_s_meanwhile": round(reads / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--writes", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=300, help="sessions stored beforehand")
    ap.add_argument("--read", choices=("summary", "count"), default="summary",
                    help="what each reader runs back to back: the overview's summary, or a "
                         "count (short reads, many connections)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        Store(db).migrate()
        w = SessionWriter(Store(db), RULES)
        for k in range(args.sessions):
            w.save(session(k), None)
        first = args.sessions
        out = []
        for gate in (False, True):
            out.append(measure(db, gate, args.readers, args.writes, first, args.read))
            first += 2 * args.writes
    for row in out:
        print(json.dumps(row))
    before, after = out
    print(f"{args.readers} busy readers ({args.read}) slow a write {before['slowdown']}x "
          f"without the gate, "
          f"{after['slowdown']}x with it")


if __name__ == "__main__":
    main()
