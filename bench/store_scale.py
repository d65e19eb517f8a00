"""The write side at scale: a store grown step by step, the cost of one commit at each size,
then a soak of many commits with dashboard-like readers.

    python bench/store_scale.py                                  # 10k, 100k, 1M segments
    python bench/store_scale.py --sizes 10000 100000 --soak-commits 200  # a shorter run

Growth: sessions of --segments segments each (two channels, --dim-d embeddings) are put in
bulk (sessions, channels, segments with their keys, a volatility row per speaker), and the
similarity index is rebuilt from the store (with a cheaper graph build, --ef-add: the base's
quality does not change what a commit costs). At each size, --commits sessions are then
saved one per commit by the SessionWriter, as the worker does, each timed in three parts:
DB (the transaction: rows in, old rows out, commit), analytics (core.storage.derived inside it) and
index (core.index.segment_index.apply after it: a delta generation, checked incrementally —
the first commit of the process is compared with the store's fingerprint of every row).
Analytics is core.storage.derived's part: the group's metrics and alerts computed from memory, and
their rows inserted.

Stores are kept in --out (default .bench/store_scale/, one per size) and reused: a later run
grows each only by what it lacks, takes the sessions earlier runs committed out again, and
rebuilds the index only when it does not match the store.

Soak (at --soak-at, default the largest size): --soak-commits commits while --readers processes
do what a dashboard page does in a loop (the session list, a session's segments, a
similar-moments search, then --think seconds) and record each read's latency; reads are also
timed with no writer (idle). It reports read p50
and p95 idle and under load, the WAL and database file size over time, and the index's
generations, deltas and compactions.

The last line is `ratio: X`: per-commit cost at the largest size ÷ at the smallest.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.storage import derived  # noqa: E402
from core.index import index_compact, index_files, segment_index
from core.index import vector_index as vx  # noqa: E402
from core.base.labels import LABELS  # noqa: E402
from core.analysis.rules import load_rules  # noqa: E402
from core.storage.group_tables import insert  # noqa: E402
from core.storage.sessions import SessionWriter, session_tables  # noqa: E402
from core.storage.store import Store  # noqa: E402
from core.base.types import (ChannelQuality, Curve, Segment, SessionMeta,  # noqa: E402
                        SessionResult, segment_id_for)
from core.storage.vector_keys import keys_for  # noqa: E402

MODEL = "synthetic"


def session(k: int, n_seg: int, dim: int, rng) -> SessionResult:
    """One call as the engine hands it to the writer (curves every 0.1 s)."""
    sid = f"w{k:014d}"
    duration = float(rng.uniform(60, 180))
    segs = []
    for ch, role in enumerate(("agent", "customer")):
        for n, s in enumerate(np.sort(rng.uniform(0, duration - 2, n_seg // 2))):
            sc = rng.dirichlet(np.ones(9)).astype(np.float32)
            top = int(sc.argmax())
            segs.append(Segment(segment_id_for(sid, ch, n), ch, role, round(float(s), 3),
                                round(float(s) + 1.5, 3), LABELS[top], float(sc[top]), sc,
                                rng.standard_normal(dim).astype(np.float32), 0.05, 0.0, (),
                                None))
    t = np.arange(0, duration, 0.1)
    curves = tuple(Curve(ch, r, t, rng.dirichlet(np.ones(9), len(t)).astype(np.float32))
                   for ch, r in enumerate(("agent", "customer")))
    chans = tuple(ChannelQuality(ch, r, duration, 0.05, 0.0, duration / 2, ())
                  for ch, r in enumerate(("agent", "customer")))
    meta = SessionMeta(agent_id=f"a-{k % 60:03d}", customer_id=f"c-{k % 4000:04d}",
                       team="support", recorded_at="2026-11-20T10:00:00", tags=())
    return SessionResult(sid, f"/synthetic/{sid}.wav", f"{sid}.wav", f"{k:015d}{'0' * 49}",
                         duration, 2, meta, chans, tuple(segs), curves, codec="pcm_s16le",
                         sample_rate=16000)


def grow(store: Store, run: str, first: int, n_sessions: int, n_seg: int, dim: int) -> None:
    """Bulk rows for sessions [first, first + n): what years of ingest leave behind."""
    rng = np.random.default_rng(first)
    step = 2000
    for lo in range(first, first + n_sessions, step):
        k = np.arange(lo, min(first + n_sessions, lo + step))
        sids = [f"b{x:014d}" for x in k]
        at = datetime(2025, 1, 1) + timedelta(seconds=int(lo))
        sessions = pa.table({
            "session_id": sids, "source_path": [f"/bulk/{s}.wav" for s in sids],
            "file_name": [f"{s}.wav" for s in sids], "sha256": [f"{x:064x}" for x in k],
            "duration_s": rng.uniform(60, 180, k.size), "n_channels": pa.array([2] * k.size,
                                                                             pa.int32()),
            "status": ["ok"] * k.size, "agent_id": [f"a-{x % 60:03d}" for x in k],
            "team": ["support"] * k.size, "run_id": [run] * k.size,
            "recorded_at": pa.array([at + timedelta(seconds=int(i)) for i in range(k.size)],
                                    pa.timestamp("us")),
            "ingested_at": pa.array([at + timedelta(seconds=int(i)) for i in range(k.size)],
                                    pa.timestamp("us"))})
        chan = pa.table({"session_id": np.repeat(sids, 2).tolist(),
                         "channel": pa.array(np.tile([0, 1], k.size), pa.int32()),
                         "speaker": ["agent", "customer"] * k.size})
        n = k.size * n_seg
        seg_sid = np.repeat(sids, n_seg)
        pos = np.tile(np.arange(n_seg), k.size)
        ch = (pos >= n_seg // 2).astype(np.int32)
        seg_ids = [f"{s}-c{c}-{p:05d}" for s, c, p in zip(seg_sid, ch, pos)]
        scores = rng.dirichlet(np.ones(9), n).astype(np.float32)
        emb = rng.standard_normal((n, dim), dtype=np.float32)
        start = rng.uniform(0, 170, n)
        segs = pa.table({
            "segment_id": seg_ids, "session_id": seg_sid.tolist(), "channel": ch,
            "speaker": np.where(ch == 0, "agent", "customer").tolist(),
            "start_s": start, "end_s": start + 1.5,
            "label": np.array(LABELS)[scores.argmax(1)].tolist(),
            "confidence": scores.max(1).astype(np.float64),
            "scores": pa.FixedSizeListArray.from_arrays(pa.array(scores.ravel()), 9),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim),
            "segment_key": pa.array(keys_for(seg_ids), pa.uint64())})
        metrics = pa.table({"session_id": np.repeat(sids, 3).tolist(),
                            "speaker": ["agent", "customer", "all"] * k.size,
                            "volatility": rng.uniform(0.2, 0.9, 3 * k.size)})
        with store.write() as con:
            insert(con, "sessions", sessions)
            insert(con, "channels", chan)
            insert(con, "segments", segs, casts={"scores": "FLOAT[9]", "embedding": "FLOAT[]"})
            insert(con, "session_metrics", metrics)


def files_of(store: Store) -> tuple[int, int]:
    wal = store.path.with_name(store.path.name + ".wal")
    return store.path.stat().st_size, wal.stat().st_size if wal.exists() else 0


class Timed:
    """Splits each save into DB, analytics and index time."""

    def __init__(self):
        self.analytics = 0.0
        for name in ("analyse", "insert"):  # the group's analytics, then their rows in
            inner = getattr(derived, name)

            def timed(*a, inner=inner, **k):
                t = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    self.analytics += time.perf_counter() - t
            setattr(derived, name, timed)

    def commit(self, w: SessionWriter, r: SessionResult, run: str) -> dict:
        self.analytics = 0.0
        t = time.perf_counter()
        w.save(r, run)
        total = time.perf_counter() - t
        index = (w.last_index_update or {}).get("seconds", float("nan"))
        return {"total": total, "analytics": self.analytics, "index": index,
                "db": total - self.analytics - index}


def reader_loop(db: str, dim: int, stop, out_q, idle: bool, think: float) -> None:
    """What a dashboard page does, again and again: list, one session's rows, similar; then
    `think` seconds before the next page, as a person reading it would."""
    from core.index import similar
    from core.guard.access import operator
    from core.storage.queries import Reader
    store = Store(db)
    r = Reader(store, operator())
    rng = np.random.default_rng(os.getpid())
    lat = []
    while not stop.is_set():
        t = time.perf_counter()
        try:
            listed = r.sessions()
            r.segments(listed.session_id.iloc[int(rng.integers(0, len(listed)))])
            similar.neighbours(r, MODEL, dim, rng.standard_normal(dim), 10)
        except Exception as e:  # noqa: BLE001 - a failed read is a data point, reported
            lat.append(-1.0)
            print(f"reader: {e}", file=sys.stderr)
            continue
        lat.append(time.perf_counter() - t)
        if not idle:  # so far, for the soak's progress lines
            with open(f"{db}.reads.{os.getpid()}", "a") as f:
                f.write(f"{lat[-1]}\n")
        if idle and len(lat) >= 20:
            break
        stop.wait(think)
    out_q.put(lat)


def reads_so_far(db: str) -> np.ndarray:
    out = []
    for p in Path(db).parent.glob(Path(db).name + ".reads.*"):
        out += [float(x) for x in p.read_text().split()]
    return np.array(out)


def reads(db: str, dim: int, n: int, seconds: float | None,
          think: float) -> tuple[mp.Event, list, mp.Queue]:
    ctx = mp.get_context("spawn")
    stop, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=reader_loop, args=(db, dim, stop, q, seconds is not None, think))
             for _ in range(n)]
    for p in procs:
        p.start()
    return stop, procs, q


def collect(stop, procs, q, idle: bool = False) -> np.ndarray:
    if not idle:
        stop.set()
    lat = []
    for _ in procs:
        lat += q.get()
    stop.set()
    for p in procs:
        p.join()
    return np.array(lat)


def pct(lat: np.ndarray) -> str:
    ok = lat[lat >= 0]
    fails = int((lat < 0).sum())
    if not ok.size:
        return "no reads"
    return (f"p50 {np.percentile(ok, 50) * 1e3:.0f} ms · p95 {np.percentile(ok, 95) * 1e3:.0f} ms"
            f" · {ok.size} reads" + (f" · {fails} failed" if fails else ""))


def index_state(store: Store) -> dict:
    space = segment_index.spaces(store)[0]
    m = index_files.read_manifest(segment_index.path_of(store, space))
    return {"generation": m["generation"], "deltas": len(m.get("deltas", [])),
            "delta_rows": sum(d["count"] for d in m.get("deltas", [])),
            "compactions": index_compact.stats["compactions"]}


def soak(a, store: Store, w: SessionWriter, timed: "Timed", rng, k: int) -> int:
    """--soak commits of one session each with --readers dashboard-like readers; returns the
    next session number."""
    run = w.start_run(MODEL, "", False, "cpu", "engine", {"soak": True})
    db = str(store.path)
    for p in Path(db).parent.glob(Path(db).name + ".reads.*"):  # an earlier run's
        p.unlink()
    stop, procs, q = reads(db, a.dim, a.readers, 1.0, a.think)
    idle = collect(stop, procs, q, idle=True)
    print(f"reads idle ({a.readers} readers): {pct(idle)}")
    stop, procs, q = reads(db, a.dim, a.readers, None, a.think)
    t0 = time.perf_counter()
    soaked, sizes = [], []
    until = t0 + a.soak_minutes * 60
    for i in range(a.soak):
        soaked.append(timed.commit(w, session(k, a.segments, a.dim, rng), run))
        k += 1
        late = time.perf_counter() > until
        if i % max(1, a.soak // 20) == 0 or i == a.soak - 1 or late:
            size, wal = files_of(store)
            st = index_state(store)
            sizes.append((i, size, wal, st))
            print(f"  soak commit {i + 1:>5}: db {size / 2**20:,.0f} MiB · wal "
                  f"{wal / 2**20:.1f} MiB · index generation {st['generation']}, "
                  f"{st['deltas']} deltas ({st['delta_rows']:,} rows), compactions so far "
                  f"{st['compactions']} · load {os.getloadavg()[0]:.1f} · reads so far "
                  f"{pct(reads_so_far(db))}", flush=True)
        if late:
            print(f"  the soak stopped after {i + 1} commits: its --soak-minutes "
                  f"({a.soak_minutes:g}) ran out", flush=True)
            break
    loaded = collect(stop, procs, q)
    took = time.perf_counter() - t0
    index_compact.wait_all(600)
    tot = np.array([c["total"] for c in soaked])
    print(f"soak: {len(soaked)} commits in {took:.0f} s · commit p50 {np.median(tot) * 1e3:.0f} ms "
          f"· p95 {np.percentile(tot, 95) * 1e3:.0f} ms · index p95 "
          f"{np.percentile([c['index'] for c in soaked], 95) * 1e3:.0f} ms")
    print(f"reads under the soak ({a.readers} readers): {pct(loaded)}")
    print(f"compactions: {index_compact.stats['compactions']} "
          f"({index_compact.stats['seconds']:.0f} s in all, off the write path)")
    (Path(store.path).parent / "store_scale_soak.json").write_text(json.dumps(
        {"files": sizes, "idle": idle.tolist(), "loaded": loaded.tolist(),
         "commits": soaked}, default=str))
    return k


def prepare(work: Path, size: int, a, run_of) -> tuple[Store, SessionWriter, str, float, float]:
    """The store of `size` segments, reused from an earlier run when there is one: grown only by
    what it lacks, the sessions earlier runs committed taken out again (their rows leave the
    index as a delta), and its index rebuilt only when it does not match the store."""
    store = Store(work / f"scale-{size}.duckdb")
    store.migrate()
    w = SessionWriter(store, load_rules(None))
    run = run_of(w)
    with store.read() as con:
        have = con.execute("SELECT count(*) FROM sessions WHERE session_id LIKE 'b%'").fetchone()[0]
        old = [r[0] for r in con.execute("SELECT session_id FROM sessions "
                                        "WHERE session_id LIKE 'w%'").fetchall()]
    t = time.perf_counter()
    grow(store, run, int(have), max(0, size // a.segments - int(have)), a.segments, a.dim)
    grown = time.perf_counter() - t
    if old:  # an earlier run's commits: out of the store and, as tombstones, out of its index
        with store.write() as con:
            gone = [r[0] for r in con.execute("SELECT segment_id FROM segments "
                                              "WHERE session_id LIKE 'w%'").fetchall()]
            for table in session_tables():
                con.execute(f"DELETE FROM {table} WHERE session_id LIKE 'w%'")
        segment_index.apply(store, [], keys_for(gone))
    t = time.perf_counter()
    space = segment_index.spaces(store)[0]
    with store.read() as con:
        fp, stamp = segment_index.state(con, space)
    try:
        vx.VectorIndex.open(segment_index.path_of(store, space), space.model, space.dim, fp,
                            stamp).close()
    except vx.IndexUnusable:
        segment_index.rebuild(store, space, vx.Params(expansion_add=a.ef_add))
    index_compact.wait_all()  # a compaction the clean-up started ends before anything is timed
    return store, w, run, grown, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                    help="store sizes in segments")
    ap.add_argument("--segments", type=int, default=24, help="per session")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--commits", type=int, default=20, help="timed commits at each size")
    ap.add_argument("--soak", "--soak-commits", dest="soak", type=int, default=2000,
                    help="commits of the soak")
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--think", type=float, default=1.0,
                    help="seconds each reader waits between two page reads, as a person does")
    ap.add_argument("--soak-minutes", type=float, default=float("inf"),
                    help="stop the soak after this long even short of --soak commits")
    ap.add_argument("--soak-at", type=int, default=None,
                    help="run the soak at this size (one of --sizes; default the largest)")
    ap.add_argument("--ef-add", type=int, default=16, help="graph build effort of the base")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "store_scale",
                    help="where the stores are kept (one per size) and reused by the next run")
    a = ap.parse_args()
    work = a.out
    work.mkdir(parents=True, exist_ok=True)
    timed = Timed()
    rng = np.random.default_rng(1)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{a.dim}-d embeddings, {a.segments} segments per session")
    k, table = 0, []
    for size in a.sizes:
        store, w, run, grown, built = prepare(
            work, size, a, lambda w: w.start_run(MODEL, "", False, "cpu", "engine", {}))
        costs = []
        for _ in range(a.commits):
            costs.append(timed.commit(w, session(k, a.segments, a.dim, rng), run))
            k += 1
        med = {p: float(np.median([c[p] for c in costs])) for p in costs[0]}
        table.append((size, med))
        print(f"{size:>9,} segments: grown in {grown:.0f} s, index ready in {built:.0f} s; "
              f"per commit (median of {a.commits}): {med['total'] * 1e3:.0f} ms = DB "
              f"{med['db'] * 1e3:.0f} + analytics {med['analytics'] * 1e3:.0f} + index "
              f"{med['index'] * 1e3:.0f} ms · load {os.getloadavg()[0]:.1f}", flush=True)

        if a.soak and size == (a.soak_at or a.sizes[-1]):
            k = soak(a, store, w, timed, rng, k)
    index_compact.wait_all()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    (work / "store_scale.json").write_text(json.dumps({"table": table}, default=str))
    print(f"ratio: {table[-1][1]['total'] / table[0][1]['total']:.2f}")


if __name__ == "__main__":
    main()
