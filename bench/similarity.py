"""Similar-moment search at scale: the ANN index (core.index.vector_index) beside an exact scan.

    .venv/bin/python bench/similarity.py                       # 100k and 1M segments, 1024-d
    .venv/bin/python bench/similarity.py --sizes 100000 --queries 200

Embeddings are synthetic and clustered like a model's: each of --clusters centroids on the unit
sphere has its own low-rank spread (--rank directions) plus a little isotropic noise; queries
are held-out draws from the same mixture. Per size it reports build time, index size on disk,
cold open (a fresh process, with the index's pages dropped from the page cache by
posix_fadvise), p50/p95 top-10 latency unfiltered, with a 1 % selective filter and a 30 %
broad one, recall@10 against exact search, the writer's cost to add+remove 1,000 rows and
save, and the latency of an exact scan (float32 matrix-vector product and partial sort, what
the dashboard did before the index) measured in the same run. The last line is
`recall: X.XXX`, the unfiltered recall@10 of the largest size run.

Targets (1M × 1024, 2 cores): cold open ≤ 2 s, p50 ≤ 20 ms, p95 ≤ 50 ms, recall@10 ≥ 0.95,
1 % filter p50 ≤ 50 ms.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.index import vector_index as vx  # noqa: E402
from core.storage import vector_keys as vk  # noqa: E402

MODEL = "synthetic-clustered"


def clustered(n: int, dim: int, clusters: int, rank: int, seed: int, offset: int = 0,
              chunk: int = 50_000):
    """Yield float16 unit rows [offset, offset+n) of one fixed mixture, chunk by chunk."""
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((clusters, dim)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, rank, dim)).astype(np.float32) / np.sqrt(dim)
    for lo in range(offset, offset + n, chunk):
        m = min(offset + n, lo + chunk) - lo
        r = np.random.default_rng([seed, lo])
        c = r.integers(0, clusters, m)
        z = r.standard_normal((m, rank)).astype(np.float32) * (0.6 / np.sqrt(rank))
        # centroid (norm 1) + within-cluster spread (norm ~0.6) + isotropic noise (norm ~0.3)
        x = cent[c]
        order = np.argsort(c, kind="stable")
        cuts = np.flatnonzero(np.diff(c[order])) + 1
        for grp in np.split(order, cuts):
            x[grp] += z[grp] @ bases[c[grp[0]]]
        x += r.standard_normal((m, dim)).astype(np.float32) * (0.3 / np.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x.astype(np.float16)


def exact_top(X16: np.ndarray, Q: np.ndarray, k: int, rows: np.ndarray | None = None,
              chunk: int = 65536) -> np.ndarray:
    """Row indices of the exact top-k (cosine; rows are unit) per query, chunked over X."""
    idx = np.arange(len(X16)) if rows is None else rows
    best_i = np.zeros((len(Q), 0), np.int64)
    best_s = np.zeros((len(Q), 0), np.float32)
    for lo in range(0, idx.size, chunk):
        part = idx[lo:lo + chunk]
        s = Q @ X16[part].astype(np.float32).T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_i = np.concatenate([best_i, part[top]], axis=1)
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_i = np.take_along_axis(best_i, keep, 1)
        best_s = np.take_along_axis(best_s, keep, 1)
    return best_i


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / max(len(t), 1)
                          for f, t in zip(found, truth)]))


def scan_top(M: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k rows of unit rows `M` by cosine to `q`, only rows in `mask` when given: the
    brute-force baseline, one matrix-vector product and a partial sort."""
    q = q / (np.linalg.norm(q) or 1.0)
    sims = M @ q.astype(np.float32)
    if mask is not None:
        sims = np.where(mask, sims, -np.inf)
    part = np.argpartition(-sims, k - 1)[:k]
    return part[np.argsort(-sims[part], kind="stable")]


def latencies(fn, queries) -> tuple[np.ndarray, list]:
    out, ts = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        ts.append(time.perf_counter() - t)
    return np.array(ts) * 1e3, out


def drop_cache(paths) -> None:
    """Evict these files' pages (only theirs) so the next open reads from disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


COLD_OPEN = """
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from core.index import vector_index as vx
from core.storage import vector_keys as vk
t0 = time.perf_counter()
ix = vx.VectorIndex.open({path!r}, {model!r}, {dim}, vk.Fingerprint(*{fp}))
t1 = time.perf_counter()
q = np.load({qpath!r})
ix.search(q[0], 10)
t2 = time.perf_counter()
lat = []
for v in q[1:21]:
    t = time.perf_counter(); ix.search(v, 10); lat.append(time.perf_counter() - t)
st = {{l.split(":")[0]: int(l.split()[1]) / 1024 for l in open("/proc/self/status")
      if l.startswith(("RssAnon", "RssFile"))}}
print(json.dumps({{"open": t1 - t0, "first": t2 - t1, "next_p50": float(np.median(lat)),
                  "anon_mb": st["RssAnon"], "file_mb": st["RssFile"]}}))
"""


def cold_open(path: Path, dim: int, fp: vk.Fingerprint, qpath: Path, files: list[Path]) -> dict:
    drop_cache(files)
    code = COLD_OPEN.format(root=str(ROOT), path=str(path), model=MODEL, dim=dim,
                            fp=(fp.count, fp.key_sum, fp.key_xor), qpath=str(qpath))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(n: int, args, work: Path) -> dict:
    dim, k = args.dim, 10
    print(f"\n== {n:,} segments × {dim}-d", flush=True)
    t = time.perf_counter()
    X16 = np.empty((n, dim), np.float16)
    pos = 0
    for block in clustered(n, dim, args.clusters, args.rank, args.seed):
        X16[pos:pos + len(block)] = block
        pos += len(block)
    Q = np.concatenate(list(clustered(args.queries, dim, args.clusters, args.rank, args.seed,
                                      offset=n))).astype(np.float32)
    ids = [f"s{i // 100:09d}-c{i % 2}-{i % 100:05d}" for i in range(n)]
    keys = vk.keys_for(ids)
    print(f"data {time.perf_counter() - t:.1f} s", flush=True)

    # Build: the writer path (create, add in batches, save).
    path = vx.index_path(work / f"bench{n}.duckdb", MODEL, dim)
    params = vx.Params(connectivity=args.connectivity, expansion_add=args.expansion_add,
                       expansion_search=args.expansion_search, rerank=args.rerank)
    t = time.perf_counter()
    w = vx.VectorIndex.create(path, MODEL, dim, params)
    in_base = n - args.deltas
    for lo in range(0, in_base, 100_000):
        hi = min(in_base, lo + 100_000)
        w.add(keys[lo:hi], X16[lo:hi])
        print(f"  added {hi:,} ({time.perf_counter() - t:.0f} s)", flush=True)
    t_add = time.perf_counter() - t
    w.save()
    build_s = time.perf_counter() - t
    w.close()
    del w
    gc.collect()
    # The last --deltas rows as the writer leaves them between compactions: delta generations
    # of 1,000 rows a commit (like-sized trailing ones merged as they are written).
    for lo in range(in_base, n, 1000):
        with vx.VectorIndex.open(path, MODEL, dim, writable=True) as w:
            w.add(keys[lo:lo + 1000], X16[lo:lo + 1000])
            w.save()
    if args.deltas:
        m = json.loads(path.read_text())
        print(f"  {args.deltas:,} rows in {len(m.get('deltas', []))} deltas beside the base",
              flush=True)
    files = [path.parent / f["name"] for f in json.loads(path.read_text())["files"].values()]
    size = {p.name.split(".", 2)[-1]: p.stat().st_size for p in files}
    print(f"build {build_s:.1f} s (add {t_add:.1f}, save {build_s - t_add:.1f}); files "
          + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in size.items()), flush=True)

    fp = vk.Fingerprint.of(keys)
    qpath = work / "queries.npy"
    np.save(qpath, Q)
    cold = cold_open(path, dim, fp, qpath, files)
    print(f"cold open {cold['open'] * 1e3:.0f} ms, first query {cold['first'] * 1e3:.0f} ms, "
          f"next p50 {cold['next_p50'] * 1e3:.1f} ms; child memory: {cold['anon_mb']:.0f} MiB "
          f"own, {cold['file_mb']:.0f} MiB mapped file pages",
          flush=True)

    ix = vx.VectorIndex.open(path, MODEL, dim, fp)
    order = np.argsort(keys)  # key-sorted position → row
    row_of = lambda found: order[np.searchsorted(keys[order], found)]  # noqa: E731
    truth = exact_top(X16, Q, k)
    for q in Q[:20]:  # warm the pages the way a running server would have them
        ix.search(q, k)
    lat_ann, hits = latencies(lambda q: ix.search(q, k), Q)
    rec_ann = recall([row_of(h.keys) for h in hits], list(truth))

    rng = np.random.default_rng(args.seed + 1)
    sel_rows = np.sort(rng.choice(n, max(k, n // 100), replace=False))
    sel = vx.Allowed.of(keys[sel_rows])
    lat_sel, hits = latencies(lambda q: ix.search(q, k, allowed=sel), Q)
    rec_sel = recall([row_of(h.keys) for h in hits], list(exact_top(X16, Q, k, sel_rows)))
    ok_sel = all(np.isin(h.keys, sel.keys).all() and len(h) == k for h in hits)
    broad_rows = np.sort(rng.choice(n, int(n * 0.3), replace=False))
    broad = vx.Allowed.of(keys[broad_rows])
    lat_broad, hits = latencies(lambda q: ix.search(q, k, allowed=broad), Q)
    rec_broad = recall([row_of(h.keys) for h in hits], list(exact_top(X16, Q, k, broad_rows)))
    methods = pd.Series([h.method for h in hits]).value_counts().to_dict()
    ok_broad = all(np.isin(h.keys, broad.keys).all() and len(h) == k for h in hits)
    sweep = []
    pairs = [tuple(int(v) for v in pair.split(":")) for pair in args.sweep.split(",") if pair]
    for ef, rr in pairs:
        ix.tune(expansion_search=ef, rerank=rr)
        lat, hs = latencies(lambda q: ix.search(q, k), Q)
        sweep.append({"ef": ef, "rerank": rr, "p50": float(np.median(lat)),
                      "p95": float(np.percentile(lat, 95)),
                      "recall": recall([row_of(h.keys) for h in hs], list(truth))})
        print("  sweep " + json.dumps(sweep[-1]), flush=True)
    del ix
    gc.collect()

    # Writer cost per save at this size: load, add 1,000 new rows, remove 1,000, save.
    t = time.perf_counter()
    w = vx.VectorIndex.open(path, MODEL, dim, fp, writable=True)
    t_load = time.perf_counter() - t
    new = np.concatenate(list(clustered(1000, dim, args.clusters, args.rank, args.seed,
                                        offset=n + args.queries)))
    w.add(vk.keys_for(f"new-{i}" for i in range(1000)), new)
    w.remove(keys[:1000])
    t_mod = time.perf_counter() - t - t_load
    w.save()
    t_upd = time.perf_counter() - t
    w.close()
    del w
    gc.collect()

    # The exact scan, side by side: a float32 matrix, top-k with and without a 1 % mask.
    M = np.empty((n, dim), np.float32)
    for lo in range(0, n, 65536):
        M[lo:lo + 65536] = X16[lo:lo + 65536]
    del X16
    gc.collect()
    mask = np.zeros(n, bool)
    mask[sel_rows] = True
    nb = min(len(Q), args.brute_queries)
    lat_bf, _ = latencies(lambda q: scan_top(M, q, k), Q[:nb])
    lat_bfm, _ = latencies(lambda q: scan_top(M, q, k, mask), Q[:nb])
    del M
    gc.collect()
    if not args.keep:
        shutil.rmtree(path.parent, ignore_errors=True)

    p = lambda a, q: float(np.percentile(a, q))  # noqa: E731
    row = {"n": n, "build_s": build_s, "size_mib": sum(size.values()) / 2**20,
           "cold_open_ms": cold["open"] * 1e3, "cold_first_ms": cold["first"] * 1e3,
           "p50": p(lat_ann, 50), "p95": p(lat_ann, 95), "recall": rec_ann,
           "sel_p50": p(lat_sel, 50), "sel_p95": p(lat_sel, 95), "sel_recall": rec_sel,
           "sel_ok": ok_sel, "broad_p50": p(lat_broad, 50), "broad_p95": p(lat_broad, 95),
           "broad_recall": rec_broad, "broad_ok": ok_broad, "broad_methods": methods,
           "load_s": t_load, "update_s": t_upd, "modify_s": t_mod,
           "bf_p50": p(lat_bf, 50), "bf_p95": p(lat_bf, 95), "bfm_p50": p(lat_bfm, 50),
           "bfm_p95": p(lat_bfm, 95), "sweep": sweep}
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = [f"{'':34s}" + "".join(f"{r['n']:>14,}" for r in rows)]

    def line(label, fmt, key):
        lines.append(f"{label:34s}" + "".join(f"{fmt.format(r[key]):>14s}" for r in rows))
    line("build (add + save), s", "{:.0f}", "build_s")
    line("index files, MiB", "{:.0f}", "size_mib")
    line("cold open, ms", "{:.0f}", "cold_open_ms")
    line("first query after cold open, ms", "{:.0f}", "cold_first_ms")
    line("top-10 p50, ms (ANN)", "{:.2f}", "p50")
    line("top-10 p95, ms (ANN)", "{:.2f}", "p95")
    line("recall@10 (ANN)", "{:.3f}", "recall")
    line("1% filter p50, ms", "{:.2f}", "sel_p50")
    line("1% filter p95, ms", "{:.2f}", "sel_p95")
    line("1% filter recall@10", "{:.3f}", "sel_recall")
    line("30% filter p50, ms", "{:.2f}", "broad_p50")
    line("30% filter p95, ms", "{:.2f}", "broad_p95")
    line("30% filter recall@10", "{:.3f}", "broad_recall")
    line("writer: load graph, s", "{:.1f}", "load_s")
    line("writer: load+1k add/rm+save, s", "{:.1f}", "update_s")
    line("exact scan top-k p50, ms", "{:.1f}", "bf_p50")
    line("exact scan top-k p95, ms", "{:.1f}", "bf_p95")
    line("exact scan 1% mask p50, ms", "{:.1f}", "bfm_p50")
    lines.append(f"{'speed-up p50 (scan / ANN)':34s}"
                 + "".join(f"{r['bf_p50'] / r['p50']:>13.0f}x" for r in rows))
    lines.append(f"{'speed-up 1% (scan mask / exact)':34s}"
                 + "".join(f"{r['bfm_p50'] / r['sel_p50']:>13.0f}x" for r in rows))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--brute-queries", type=int, default=50,
                    help="queries timed on the brute-force baseline (it is slow)")
    ap.add_argument("--clusters", type=int, default=512)
    ap.add_argument("--rank", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    d = vx.Params()
    ap.add_argument("--connectivity", type=int, default=d.connectivity)
    ap.add_argument("--expansion-add", type=int, default=d.expansion_add)
    ap.add_argument("--expansion-search", type=int, default=d.expansion_search)
    ap.add_argument("--rerank", type=int, default=d.rerank)
    ap.add_argument("--sweep", default="256:3,512:3,1024:3,2048:3,1536:6",
                    help="ef_search:rerank pairs measured after the main run (empty: none)")
    ap.add_argument("--deltas", type=int, default=0,
                    help="rows kept out of the base and written as delta generations of 1,000 "
                         "(searched while they exist; 20,000 starts a compaction)")
    ap.add_argument("--workdir", default=None, help="where index files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the index files")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="emoscope-sim-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"usearch HNSW i8 graph + f16 matrix; M={args.connectivity} "
          f"ef_add={args.expansion_add} ef_search={args.expansion_search} rerank={args.rerank}; "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    rows = [run_size(n, args, work) for n in sizes]
    print()
    print(table(rows))
    for r in rows:
        if r["sweep"]:
            print(f"\n{r['n']:,}: ef_search rerank   p50 ms   p95 ms  recall@10")
            for w in r["sweep"]:
                print(f"{'':>10}{w['ef']:>9}{w['rerank']:>7}{w['p50']:>9.2f}{w['p95']:>9.2f}"
                      f"{w['recall']:>11.3f}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"recall: {rows[-1]['recall']:.3f}")


if __name__ == "__main__":
    main()
