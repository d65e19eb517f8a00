"""Compacting an ANN index (core.index.vector_index): its deltas folded into a new base.

A compaction folds every delta into a new base off the write path: it loads the base's graph
into memory, drops the tombstoned rows, adds the deltas' rows, and writes the new files under
hidden names. Then, holding the swap lock for a moment, it renames them into place and
publishes a manifest of the new base plus the deltas written since it began (their tombstones
cover every key they wrote, so they apply to the new base unchanged). A compaction killed at
any point leaves the published manifest and its files intact; its hidden files are cleared by
the next one. If the base changed meanwhile (a rebuild), its work is thrown away.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from pathlib import Path

import numpy as np

from core.index import index_files as files
from core.index.index_generations import EXT
from core.index.vector_index import VectorIndex
from core.storage.vector_keys import Fingerprint

log = logging.getLogger("emoscope.index")
_running: dict[str, threading.Thread] = {}
_guard = threading.Lock()
stats = {"compactions": 0, "seconds": 0.0, "aborted": 0}  # this process's, for benchmarks


def compact(path: str | Path, wait: bool = False) -> dict | None:
    """Fold the deltas into a new base. Returns what it did, or None when there was nothing to
    fold, another compaction holds the index (unless `wait`), or a rebuild overtook it."""
    from core.index.index_files import new_graph
    path = Path(path)
    try:
        lock = files.writer_lock(path, "compact.lock", wait=wait)
    except RuntimeError:
        return None
    t0 = time.perf_counter()
    folder, stem, tag = path.parent, path.stem, secrets.token_hex(3)
    try:
        for p in folder.glob(f".{stem}.part-*"):  # left by a compaction that was killed
            p.unlink(missing_ok=True)
        m0 = files.read_manifest(path)
        ix = VectorIndex.open(path, m0["model"], int(m0["dim"]))
        m0 = ix.manifest
        if not m0.get("deltas"):
            return None
        graph = new_graph(ix.dim, ix.params, True)
        graph.load(str(folder / m0["files"]["graph"]["name"]))
        if ix._dead.size:
            graph.remove(ix._dead)
        pk, pv = ix._new_rows()
        if pk.size:
            graph.add(pk, pv.astype(np.float32), threads=0)
        files.scrub_free_slots(graph, ix.dim)  # no removed (erased) vector stays in the file
        parts = {k: folder / f".{stem}.part-{tag}.{ext}" for k, ext in EXT.items()}
        keys, _ = ix._merged(parts["keys"], parts["vecs"])
        graph.save(str(parts["graph"]))
        del graph
        fp = Fingerprint.of(keys)
        with files.swapping(path):
            m = files.read_manifest(path)
            if m.get("files") != m0["files"]:
                stats["aborted"] += 1
                return None
            done = {}
            for k, p in parts.items():
                final = folder / f"{stem}.c{m0['generation']}-{tag}.{EXT[k]}"
                e = files.entry(p)
                p.rename(final)
                done[k] = dict(e, name=final.name)
            g = int(m0["generation"])
            new = dict(m, generation=int(m["generation"]) + 1, count=fp.count,
                       key_sum=fp.key_sum, key_xor=fp.key_xor, files=done, base_generation=g,
                       deltas=[d for d in m.get("deltas", []) if int(d["hi"]) > g])
            files.publish(path, new, tag)
            files.sweep(path, new)
        seconds = time.perf_counter() - t0
        stats["compactions"] += 1
        stats["seconds"] += seconds
        log.info("%s: compacted %d delta rows into a base of %d in %.1f s", path,
                 ix.delta_rows, fp.count, seconds)
        return {"rows": fp.count, "folded": ix.delta_rows, "seconds": seconds}
    finally:
        for p in folder.glob(f".{stem}.part-{tag}.*"):
            p.unlink(missing_ok=True)
        lock.close()


def compact_soon(path: str | Path) -> threading.Thread | None:
    """Start a compaction of `path` in a background thread unless one is running here."""
    key = str(path)
    with _guard:
        t = _running.get(key)
        if t is not None and t.is_alive():
            return None

        def run():
            try:
                compact(path)
            except Exception:  # the deltas stay searchable; the next trigger tries again
                log.exception("%s: compaction failed", path)

        t = threading.Thread(target=run, name=f"compact {Path(path).name}", daemon=True)
        _running[key] = t
        t.start()
        return t


def wait_all(timeout: float | None = None) -> None:
    """Wait for this process's background compactions (benchmarks, tests, shutdown)."""
    for t in list(_running.values()):
        t.join(timeout)
