"""Index generations: each save appends a small delta (rows and tombstones) to a base; a
compaction folds the deltas into a new base while a writer and readers carry on; a compaction
killed with SIGKILL loses nothing and leaves the index equal to the store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.index import index_compact, index_files, segment_index
from core.index import vector_index as vx
from core.storage import vector_keys as vk
from core.storage.store import Store
from tests import views_fixtures as vf
from tests.store_fixtures import RULES, writer_for
from tests.test_segment_index import assert_index_equals_store
from tests.test_vector_index import MODEL, clustered

ROOT = Path(__file__).resolve().parent.parent
D = 32


class Truth:
    """What the index must hold: key → unit vector, changed alongside the index."""

    def __init__(self, keys, X):
        self.rows = {int(k): v for k, v in zip(keys, X)}

    def add(self, keys, X):
        self.rows.update({int(k): v / np.linalg.norm(v) for k, v in zip(keys, X)})

    def remove(self, keys):
        for k in keys:
            self.rows.pop(int(k), None)

    def assert_held_by(self, ix):
        keys = np.array(sorted(self.rows), np.uint64)
        assert np.array_equal(ix.keys(), keys)
        assert ix.fingerprint() == vk.Fingerprint.of(keys)
        np.testing.assert_allclose(ix.vectors(keys), np.stack([self.rows[int(k)] for k in keys]),
                                   atol=2e-3)


def base(tmp_path, n=3000):
    X, _ = clustered(n, D, clusters=12, seed=2)
    keys = vk.keys_for(f"b-{i}" for i in range(n))
    ix = vx.build(vx.index_path(tmp_path / "s.duckdb", MODEL, D), MODEL, D, [(keys, X)])
    return ix.path, keys, X, Truth(keys, X)


def commit(path, truth, i, n_new=40, replace=(), remove=()):
    """One writer session: n_new new rows, some replaced and some removed, saved as a delta."""
    X, _ = clustered(n_new + len(replace), D, clusters=12, seed=100 + i)
    new = vk.keys_for(f"c{i}-{j}" for j in range(n_new))
    with vx.VectorIndex.open(path, MODEL, D, writable=True) as w:
        w.add(np.concatenate([new, np.asarray(replace, np.uint64)]), X)
        w.remove(remove)
        w.save(stamp=f"commit-{i}")
    truth.add(np.concatenate([new, np.asarray(replace, np.uint64)]), X)
    truth.remove(remove)
    return new, X


def test_saves_append_deltas_with_tombstones_and_compaction_folds_them(tmp_path):
    path, keys, X, truth = base(tmp_path)
    base_files = index_files.read_manifest(path)["files"]
    replaced, removed = keys[:50], keys[50:80]
    new, newX = commit(path, truth, 0, replace=replaced, remove=removed)
    m = index_files.read_manifest(path)
    assert m["files"] == base_files  # the base is never rewritten by a save
    assert [(d["count"], d["tombs"]) for d in m["deltas"]] == [(90, 120)]  # its own keys too
    r = vx.VectorIndex.open(path, MODEL, D, expected=vk.Fingerprint.of(np.array(
        sorted(truth.rows), np.uint64)), stamp="commit-0")
    truth.assert_held_by(r)
    # Tombstoned rows never come back, through the graph or exactly; delta rows are found.
    for q in X[50:80]:
        assert not np.isin(r.search(q, 20).keys, removed).any()
    assert np.mean([r.search(v, 1).keys[0] == k for k, v in zip(new, newX)]) == 1.0
    assert r.search(newX[0], 5, allowed=new[:3]).method == "exact"
    # Many small saves stay a handful of deltas (like-sized trailing ones are merged).
    for i in range(1, 17):
        commit(path, truth, i, n_new=10, remove=keys[100 + i:101 + i])
    m = index_files.read_manifest(path)
    assert len(m["deltas"]) <= 6 and m["deltas"][-1]["hi"] == m["generation"]
    fresh = r.refreshed()
    assert fresh._graph is r._graph  # only the deltas were read again
    truth.assert_held_by(fresh)
    dead = len(set(keys.tolist()) - set(truth.rows)) + len(replaced)  # base rows hidden
    assert fresh.delta_rows == sum(d["count"] for d in m["deltas"]) + dead
    done = index_compact.compact(path)
    assert done and done["rows"] == len(truth.rows)
    m = index_files.read_manifest(path)
    assert m["deltas"] == [] and m["files"] != base_files
    after = fresh.refreshed()
    assert after.delta_rows == 0 and after.manifest["stamp"] == "commit-16"
    truth.assert_held_by(after)
    truth.assert_held_by(fresh)  # the old mapping still answers, from unlinked files
    names = {p.name for p in path.parent.iterdir()}
    assert names == index_files.referenced(m) | {path.name} | {
        f"{path.stem}.{x}" for x in ("lock", "swap.lock", "compact.lock")}


def test_a_compaction_racing_a_writer_and_searches_loses_nothing(tmp_path, monkeypatch):
    path, keys, X, truth = base(tmp_path)
    for i in range(3):
        commit(path, truth, i, replace=keys[i * 10:i * 10 + 5], remove=keys[500 + i:501 + i])
    # The compaction stops after building its new base until the writer and readers have
    # worked against the old one.
    built, go = threading.Event(), threading.Event()
    merged = vx.VectorIndex._merged

    def slow_merged(self, *a):
        out = merged(self, *a)
        if threading.current_thread().name.startswith("compact"):
            built.set()
            go.wait(30)
        return out
    monkeypatch.setattr(vx.VectorIndex, "_merged", slow_merged)
    t = index_compact.compact_soon(path)
    assert built.wait(30)
    reader = vx.VectorIndex.open(path, MODEL, D)
    gone = keys[600:620]
    errors, stop, seen = [], threading.Event(), set()

    def search():
        ix, j = reader, 0
        try:
            while not stop.is_set() or j < 5:
                ix = ix.refreshed()
                seen.add(ix.generation)
                h = ix.search(X[600 + j % 20], 10)
                j += 1
                # Every hit is a row of the generation searched: no tombstoned row resurfaces.
                if len(h) != 10 or not np.isin(h.keys, ix.keys()).all():
                    errors.append(f"generation {ix.generation}: {h}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    searcher = threading.Thread(target=search)
    searcher.start()
    during = [commit(path, truth, 10 + i, replace=keys[900 + i:901 + i],
                     remove=gone[i * 5:i * 5 + 5]) for i in range(4)]
    go.set()
    t.join(30)
    stop.set()
    searcher.join(30)
    commit(path, truth, 20)  # a save after the swap appends to the new base
    assert not errors and len(seen) >= 2
    m = index_files.read_manifest(path)
    assert m["base_generation"] == 4  # the base holds generations up to the compaction's start
    assert [d["lo"] > 4 for d in m["deltas"]] and m["deltas"]
    ix = vx.VectorIndex.open(path, MODEL, D)
    truth.assert_held_by(ix)
    for new, _ in during:
        assert ix.contains(new).all()
    assert not ix.contains(gone).any()
    assert not np.isin(ix.search(X[605], 50).keys, gone).any()


CHILD = """
import sys, time
from pathlib import Path
from core.index import index_compact, index_files
from core.index import vector_index as vx
stage, marker = sys.argv[1], Path(sys.argv[2])
def stop(*a, **k):
    marker.write_text("here")
    time.sleep(60)
if stage == "building":
    merged = vx.VectorIndex._merged
    def stop_after_merge(self, *a):
        out = merged(self, *a)
        stop()
        return out
    vx.VectorIndex._merged = stop_after_merge
else:
    index_files.publish = stop  # parts renamed into place, manifest not yet swapped
index_compact.compact(Path(sys.argv[3]))
"""


@pytest.mark.parametrize("stage", ["building", "swapping"])
def test_a_compaction_killed_midway_loses_nothing(tmp_path, stage):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    w = writer_for(store.path, RULES)
    run = w.start_run("tiny-random", "", False, "cpu", "engine", {})
    for r in vf.sessions()[:3]:
        w.save(r, run)
    space = segment_index.spaces(store)[0]
    path = segment_index.path_of(store, space)
    assert len(index_files.read_manifest(path)["deltas"]) >= 1
    marker = tmp_path / "marker"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, stage, str(marker), str(path)],
                             cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the compaction never reached the stage to kill it at"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert_index_equals_store(store)  # the published generation is intact
    w.save(vf.sessions()[3], run)  # the writer carries on (the locks died with the child)
    assert w.last_index_update["rebuilt"] == 0 and w.last_index_update["repaired"] == 0
    assert index_compact.compact(path)  # the next compaction runs and clears the debris
    assert not list(path.parent.glob(".*part-*"))
    ix = assert_index_equals_store(store)
    assert ix.delta_rows == 0
    m = index_files.read_manifest(path)
    assert {p.name for p in path.parent.glob(f"{path.stem}.*")
            if not p.name.endswith("lock")} == index_files.referenced(m) | {path.name}


def test_a_reader_between_a_commit_and_its_delta_waits_instead_of_rebuilding(tmp_path,
                                                                             monkeypatch):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    w = writer_for(store.path, RULES)
    run = w.start_run("tiny-random", "", False, "cpu", "engine", {})
    for r in vf.sessions()[:2]:
        w.save(r, run)
    space = segment_index.spaces(store)[0]
    late = vf.sessions()[2]
    # The store commits a session; its writer has not yet appended the index's delta.
    with monkeypatch.context() as m:
        m.setattr(w, "update_index", lambda *a: None)
        w.save(late, run)
    held = segment_index.committing(store)
    held.__enter__()
    waits, real_sleep = [], time.sleep

    def sleep(s):  # the reader waits, past its 0.2 s of grace; then the writer's delta lands
        waits.append(s)
        real_sleep(0.03)
        if len(waits) == 12:
            segment_index.apply(store, [late.session_id], np.zeros(0, np.uint64))
            held.__exit__(None, None, None)
    monkeypatch.setattr(segment_index.time, "sleep", sleep)
    monkeypatch.setattr(segment_index, "rebuild", lambda *a: pytest.fail("rebuilt"))
    ix = segment_index.for_search(store, space)
    assert len(waits) == 12
    assert ix.contains([vk.key_of(s.segment_id) for s in late.segments]).all()
    assert_index_equals_store(store)


def test_a_reader_under_back_to_back_commits_waits_past_its_grace(tmp_path, monkeypatch):
    """Each time the reader looks, a newer commit has landed and its delta has not: the store
    moving is a writer at work, so the reader keeps waiting (past stale_wait_s in all) for
    the delta that catches up, and never rebuilds."""
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    w = writer_for(store.path, RULES)
    run = w.start_run("tiny-random", "", False, "cpu", "engine", {})
    first, *later = vf.sessions()[:4]
    w.save(first, run)
    space = segment_index.spaces(store)[0]
    monkeypatch.setattr(w, "update_index", lambda *a: None)
    w.save(later[0], run)  # committed; its delta not yet appended
    looks, real_sleep = [], time.sleep

    def sleep(s):  # between two looks: another commit, still no delta, 0.2 s gone by
        looks.append(s)
        real_sleep(0.2)
        if len(looks) < len(later):
            w.save(later[len(looks)], run)
        else:
            segment_index.apply(store, [r.session_id for r in later], np.zeros(0, np.uint64))
    monkeypatch.setattr(segment_index.time, "sleep", sleep)
    monkeypatch.setattr(segment_index, "rebuild", lambda *a: pytest.fail("rebuilt"))
    ix = segment_index.for_search(store, space, stale_wait_s=0.3)
    assert len(looks) >= len(later)  # 0.6 s and more of waiting, twice the grace
    assert ix.contains([vk.key_of(s.segment_id) for r in later for s in r.segments]).all()
    assert_index_equals_store(store)
