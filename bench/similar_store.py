"""The similarity index beside a real store: what a commit costs it, and the Similar page's
first answer after a server start.

    .venv/bin/python bench/synth_store.py --db /tmp/sim.duckdb --sessions 2000 --segments 100000 \\
        --no-analytics
    .venv/bin/python bench/similar_store.py --db /tmp/sim.duckdb

Prints: the index built from the store (`emoscope index rebuild`'s work), the cost of one
commit to the index (SessionWriter.save of a re-ingested session: remove, add, check against
the store, save a new generation) beside the cost of the same save without the index, and — in
a fresh process each, as after a server start — the first similar-moment answer
(core.index.similar.similar_to: open the memory-mapped index, check it against the store, search,
read the hits' rows) unfiltered and with a team + label filter.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.index import segment_index  # noqa: E402
from core.analysis.rules import load_rules  # noqa: E402
from core.storage.sessions import SessionWriter  # noqa: E402
from core.storage.store import Store  # noqa: E402
from core.base.types import (ChannelQuality, Segment, SessionMeta, SessionResult,  # noqa: E402
                        segment_id_for)

FIRST = """
import sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from core.guard.access import operator
from core.storage.queries import Reader
from core.index.similar import similar_to
from core.storage.store import Store
r = Reader(Store({db!r}), operator())
seg = r.store.query("SELECT segment_id FROM segments USING SAMPLE 1 ROWS").segment_id[0]
t1 = time.perf_counter()
got = similar_to(r, seg, 10, **{kw})
t2 = time.perf_counter()
again = [similar_to(r, seg, 10, **{kw}) for _ in range(5)]
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_s": t2 - t1, "next_ms": (t3 - t2) / 5 * 1000,
                  "hits": len(got.hits), "method": got.method, "searched": got.searched}}))
"""


def session(dim: int, rng, n: int = 50) -> SessionResult:
    sid = "sbench-reingest"
    segs = tuple(Segment(segment_id_for(sid, i % 2, i), i % 2, ("agent", "customer")[i % 2],
                         i * 3.0, i * 3.0 + 2.5, "neutral", 0.8,
                         np.full(9, 1 / 9, np.float32), rng.normal(size=dim).astype(np.float32),
                         0.1, 0.0, (), None) for i in range(n))
    ch = tuple(ChannelQuality(c, r, n * 3.0, 0.1, 0.0, n, ()) for c, r in
               ((0, "agent"), (1, "customer")))
    return SessionResult(sid, "/synthetic/bench.wav", "bench.wav", "f" * 64, n * 3.0, 2,
                         SessionMeta(agent_id="a-000", team="support",
                                     recorded_at="2026-11-01T10:00:00"), ch, segs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--commits", type=int, default=5)
    a = ap.parse_args()
    store = Store(a.db)
    store.migrate()
    space = segment_index.spaces(store)[0]
    t0 = time.perf_counter()
    ix = segment_index.rebuild(store, space)
    build_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in ix.path.parent.glob(f"{ix.path.stem}.*"))
    print(f"store: {space.n:,} segments, {space.dim}-d ({space.model})")
    print(f"index build from the store: {build_s:.1f} s, {size / 2**20:.0f} MiB")

    writer = SessionWriter(store, load_rules())
    run = store.query("SELECT run_id FROM runs LIMIT 1").run_id[0]
    rng = np.random.default_rng(0)
    with_ix, without, index_only = [], [], []
    for i in range(a.commits):
        r = session(space.dim, rng)
        r = dataclasses.replace(r, segments=tuple(
            dataclasses.replace(s, embedding=rng.normal(size=space.dim).astype(np.float32))
            for s in r.segments))
        # Side by side: the same save with the index update, then without it.
        t = time.perf_counter()
        writer.save(r, run)
        with_ix.append(time.perf_counter() - t)
        index_only.append(writer.last_index_update["seconds"])
        keep = writer.update_index
        writer.update_index = lambda *x: None
        t = time.perf_counter()
        writer.save(r, run)
        without.append(time.perf_counter() - t)
        writer.update_index = keep
        writer.update_index([r.session_id], np.zeros(0, np.uint64))  # catch up
    print(f"one commit (a 50-segment session): save {statistics.median(without) * 1000:.0f} ms "
          f"without the index, {statistics.median(with_ix) * 1000:.0f} ms with it; "
          f"index update {statistics.median(index_only) * 1000:.0f} ms "
          f"(median of {a.commits}); ratio {statistics.median(with_ix) / statistics.median(without):.2f}")

    root = str(Path(__file__).resolve().parent.parent)
    team = store.query("SELECT team FROM sessions WHERE team IS NOT NULL LIMIT 1").team[0]
    for name, kw in (("unfiltered", {}),
                     (f"team {team} + label angry", {"teams": [team], "labels": ["angry"]})):
        out = subprocess.run([sys.executable, "-c", FIRST.format(root=root, db=str(a.db),
                                                                 kw=repr(kw))],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"first answer after a start, {name}: {res['first_s']:.2f} s "
              f"(then {res['next_ms']:.0f} ms per query; {res['hits']} hits by {res['method']} "
              f"among {res['searched']:,}); imports {res['import_s']:.1f} s")


if __name__ == "__main__":
    main()
