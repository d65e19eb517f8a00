"""Benchmark: `--executor ray` on a local cluster of one node, then of two, against the
streaming executor, on the same corpus.

    python bench/ray_nodes.py --hours 0.25        # tiny-random on CPU
    python bench/ray_nodes.py --hours 2 --model-shape base --head-cpus 8 --node-cpus 8

The corpus is bench/ingest.py's (cached under bench/out/). First the streaming executor
ingests it (the reference store). Then a Ray cluster is started here (`ray start --head`
with --head-cpus), the corpus is analysed into fresh shards; a second node joins (its own
temp dir, --node-cpus) and the corpus is analysed again into other shards. Both sets are
imported and must hold the streaming store's rows. Wall times of the Ray runs count the
model actors' start (they load the model) but not the import, which is timed apart. The
last line is `ratio: X.XX` (two nodes ÷ one node throughput). Every process the benchmark's
`ray start`s opened is stopped at the end. Asserts nothing beyond the rows being equal.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bench_ingest():
    """bench/ingest.py (its corpus), loaded by path: its name is the `ingest` package's."""
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "ingest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = mod  # its corpus writers are pickled by this name
    spec.loader.exec_module(mod)
    return mod


def ray_run(address: str, env: dict, files, shards: Path, model: str):
    # The cluster's token, before Ray is imported (it reads its auth settings once).
    os.environ.update({k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
    import ray

    from ingest.options import IngestOptions
    from ingest.pipeline import meta_lookup
    from ingest.ray_executor import connect, run_shards
    connect(address)
    try:
        info = {"model": model, "model_path": "", "trained": False, "device": "cpu",
                "engine": "engine"}
        return run_shards(files, meta_lookup({}), shards, model, "cpu", IngestOptions(), info)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=0.25)
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--model-shape", choices=["tiny", "base", "large"], default="tiny")
    ap.add_argument("--head-cpus", type=int, default=2)
    ap.add_argument("--node-cpus", type=int, default=1)
    ap.add_argument("--speech", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = ap.parse_args()
    os.environ.setdefault("EMOSCOPE_CACHE", str(ROOT / ".cache" / "emoscope"))

    from core.admin.shard_import import import_shards
    from core.storage.store import Store
    from ingest.model import load
    from ingest.pipeline import expand, ingest_paths
    from ingest.tiny import build
    from tests.ray_cluster import LocalCluster
    from tests.store_compare import differences
    from tests.store_fixtures import writer_for

    folder, audio_s, n = bench_ingest().corpus(a)
    model = "tiny-random" if a.model_shape == "tiny" else str(build(a.model_shape))
    files = expand([folder])
    work = Path(a.out) / f"ray-nodes-{time.strftime('%H%M%S')}"
    work.mkdir(parents=True)
    print(f"corpus: {n} files, {audio_s / 3600:.2f} h · model {a.model_shape} · cpu")

    lm = load(model, "cpu")
    t = time.perf_counter()
    report = ingest_paths(files, writer_for(work / "streaming.duckdb"), lm)
    wall = time.perf_counter() - t
    # What one core of prepare (decode + VAD) does: how many cores each GPU needs beside it.
    prep = report.timings["decode"] + report.timings["vad"]
    rows = [("streaming (1 machine)", wall, f"prepare {audio_s / prep:.0f}× real time per "
             f"core · model {audio_s / max(report.timings['model'], 1e-9):.0f}× real time")]

    with LocalCluster(head_cpus=a.head_cpus) as cluster:
        for nodes in (1, 2):
            if nodes == 2:
                cluster.add_node(cpus=a.node_cpus)
            shards = work / f"shards-{nodes}"
            run = ray_run(cluster.address, cluster.env, files, shards, model)
            t = time.perf_counter()
            imp = import_shards(writer_for(work / f"ray{nodes}.duckdb"), shards)
            same = differences(Store(work / "streaming.duckdb"), Store(work / f"ray{nodes}.duckdb"))
            split = " ".join(f"{k[:6]}×{v}" for k, v in sorted(run.nodes.items()))
            rows.append((f"ray, {nodes} node{'s' * (nodes > 1)}", run.wall_s,
                         f"import {time.perf_counter() - t:.1f} s ({len(imp.ok)} ok) · "
                         f"prepare per node {split} · rows "
                         f"{'equal' if not same else 'DIFFER: ' + '; '.join(same)}"))
    for name, wall, note in rows:
        print(f"{name:22s} {wall:7.1f} s · {audio_s / wall:6.1f}× real time"
              + (f" · {note}" if note else ""))
    print(f"ratio: {rows[1][1] / rows[2][1]:.2f}")


if __name__ == "__main__":
    main()
