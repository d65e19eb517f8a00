"""Benchmark: the writer. `emoscope import` of Parquet shards into DuckDB, the same sessions
saved straight from memory by the writer (what the local executors' store stage does), and
the same again through the writer as it was before its vectorised group path
(bench/writer_before.py), all in one run.

    python bench/import.py                      # 1,000 sessions, 24 segments each, dim 1024
    python bench/import.py --sessions 5000 --dim 768

It makes N synthetic sessions (calls with two channels, diaries with one; 20-s to 3-min long;
segments with random scores and embeddings; curves every 0.1 s), writes each as a shard
(core/intake/shards.py, not timed), then into fresh stores: one through `import_shards` (reading
the shards), one through `SessionWriter.save_many` in groups of GROUP from memory, one through
the writer before in its groups of 64 — analytics, the similarity index and the word index
kept in all. It prints sessions/s and rows/s (session, channel, segment and frame rows) and the CPU seconds
of this process for each (on a shared machine the CPU time says what the work costs, the
wall time what it took), and checks that the stores hold the same rows. The last line is
`ratio: X.XX`: the writer's throughput from memory ÷ the writer before's.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import writer_before  # noqa: E402
from core.index import index_compact  # noqa: E402
from core.analysis.rules import load_rules  # noqa: E402
from core.storage.sessions import SessionWriter  # noqa: E402
from core.admin.shard_import import GROUP, import_shards  # noqa: E402
from core.intake.shards import write_shard  # noqa: E402
from core.base.labels import LABELS  # noqa: E402
from core.storage.store import Store  # noqa: E402
from core.base.types import (ChannelQuality, Curve, Segment, SessionMeta,  # noqa: E402
                        SessionResult, segment_id_for, session_id_for)


def synthetic(k: int, n_seg: int, dim: int, rng: np.random.Generator) -> SessionResult:
    sha = hashlib.sha256(f"bench-{k}".encode()).hexdigest()  # distinct ids (the first 15)
    sid = session_id_for(sha)
    diary = k % 5 == 4
    roles = ("speaker",) if diary else ("agent", "customer")
    duration = float(rng.uniform(20, 180))
    meta = SessionMeta(agent_id=None if diary else f"a-{k % 60:03d}",
                       customer_id=f"c-{k * 7919 % 4000:04d}",
                       team="wellbeing" if diary else "support",
                       recorded_at=f"2026-11-{1 + k % 28:02d}T10:00:00", tags=("synthetic",))
    segs, curves = [], []
    for ch, role in enumerate(roles):
        starts = np.sort(rng.uniform(0, duration - 2, n_seg // len(roles)))
        for n, s in enumerate(starts):
            scores = rng.dirichlet(np.ones(9)).astype(np.float32)
            top = int(scores.argmax())
            segs.append(Segment(segment_id_for(sid, ch, n), ch, role, round(float(s), 3),
                                round(float(s) + 1.5, 3), LABELS[top], float(scores[top]),
                                scores, rng.standard_normal(dim).astype(np.float32), 0.05,
                                0.0, (), None))
        t = np.arange(0, duration, 0.1)
        curves.append(Curve(ch, role, t, rng.dirichlet(np.ones(9), len(t)).astype(np.float32)))
    channels = tuple(ChannelQuality(ch, r, duration, 0.05, 0.0, duration / 2, ())
                     for ch, r in enumerate(roles))
    return SessionResult(sid, f"/synthetic/{sid}.wav", f"{sid}.wav", sha, duration,
                         len(roles), meta, channels, tuple(segs), tuple(curves),
                         codec="pcm_s16le", sample_rate=16000)


def rows_of(r: SessionResult) -> int:
    return 1 + len(r.channels) + len(r.segments) + sum(len(c.t_s) for c in r.curves)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--segments", type=int, default=24, help="per session")
    ap.add_argument("--dim", type=int, default=1024, help="embedding size (large: 1024)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    a = ap.parse_args()
    work = a.out or Path(tempfile.mkdtemp(prefix="emoscope-import-"))
    rng = np.random.default_rng(0)
    results = [synthetic(k, a.segments, a.dim, rng) for k in range(a.sessions)]
    rows = sum(rows_of(r) for r in results)
    shards = work / "shards"
    t = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda kr: write_shard(shards, f"{kr[0]:08d}", kr[1],
                                             {"run": "bench", "position": kr[0]}),
                      enumerate(results)))
    wrote = time.perf_counter() - t
    size = sum(f.stat().st_size for f in shards.rglob("*.parquet")) / 2**20
    print(f"{a.sessions} sessions · {rows:,} rows · shards {size:.0f} MiB written in "
          f"{wrote:.1f} s")
    rules = load_rules(None)

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t, cpu = time.perf_counter(), time.process_time()
    done = import_shards(SessionWriter(Store(work / "import.duckdb"), rules), shards)
    index_compact.wait_all(600)  # a compaction the run started is part of its cost
    timed = {"import (shards)": (time.perf_counter() - t, time.process_time() - cpu)}
    assert len(done.ok) == a.sessions and done.rows == rows

    def direct(name: str, group: int) -> None:
        writer = SessionWriter(Store(work / f"{name}.duckdb"), rules)
        writer.store.migrate()
        t, cpu = time.perf_counter(), time.process_time()
        run = writer.start_run("synthetic", "", False, "cpu", "engine", {})
        for lo in range(0, len(results), group):
            writer.save_many(results[lo:lo + group], run)
        index_compact.wait_all(600)
        timed[f"{name} (memory)"] = (time.perf_counter() - t, time.process_time() - cpu)

    direct("direct", GROUP)
    with writer_before.installed():
        direct("before", writer_before.GROUP)
    for name, (secs, cpu) in timed.items():
        print(f"{name:16s} {secs:7.1f} s · {a.sessions / secs:7.1f} sessions/s · "
              f"{rows / secs:10,.0f} rows/s · CPU {cpu:6.1f} s")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    differ = _differences(work / "direct.duckdb", work / "before.duckdb")
    print("both writers' stores hold the same rows, value for value" if not differ else
          f"the writers' stores differ in: {', '.join(differ)}")
    print(f"ratio: {timed['before (memory)'][0] / timed['direct (memory)'][0]:.2f}")


def _differences(a: Path, b: Path) -> list[str]:
    """Tables whose rows differ between two stores (ingest times and runs left out)."""
    out = []
    with Store(a).read() as con:
        con.execute(f"ATTACH '{b}' AS other (READ_ONLY)")
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = "
            "current_database() AND table_schema = 'main'").fetchall()]
        for t in sorted(set(tables) - {"runs", "schema_migrations"}):
            cols = "* EXCLUDE (ingested_at, run_id)" if t == "sessions" else "*"
            n = con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM main.{t} EXCEPT ALL "
                            f"SELECT {cols} FROM other.{t}) UNION ALL SELECT count(*) FROM "
                            f"(SELECT {cols} FROM other.{t} EXCEPT ALL SELECT {cols} FROM "
                            f"main.{t})").fetchall()
            if any(x for (x,) in n):
                out.append(t)
    return out


if __name__ == "__main__":
    main()
