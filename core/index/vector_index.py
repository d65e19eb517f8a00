"""Approximate nearest neighbours over segment embeddings: an index beside the store.

DuckDB stays the source of truth; this index is derived, rebuildable and never trusted when it
does not match the store. One index per (model, embedding dimension), in a folder beside the
database (`index_path`; files in core.index.index_files, search in core.index.index_search).

Generations: a large *base* (an HNSW graph over int8 copies of the vectors, plus the float16
vectors and their sorted keys) and small *deltas*, one appended by each save: the rows added
since, and tombstones — keys whose earlier rows no longer count (removed, or replaced by the
delta's own row). A save writes only its delta and a new manifest, so a commit's index work
does not grow with the store. Trailing deltas of like size are merged as they are written
(a binary counter: few deltas, each row rewritten a few times). When the deltas pass
`Params.compact_rows`, core.index.index_compact folds them into a new base off the write path, and
readers switch to it when they next refresh.

Writers and readers: `open()` maps the files read-only; a writer (writable=True) holds the
writer lock and keeps its changes in memory until `save()`. `create()` (and `reset()`) start a
*fresh* writer whose rows go into a new graph in RAM, saved as a new base. Readers keep their
old mappings valid (files are unlinked, never overwritten) and pick up new generations with
`refreshed()`, which reuses the base it has mapped when only deltas changed.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from core.index import index_files as files
from core.index import index_generations
from core.index.index_files import (IndexCorrupt, IndexMissing, IndexOtherModel,  # noqa: F401
                              IndexStale, IndexUnusable, IndexWrongDim, index_path,
                              base_fp, live_deltas, load_base, load_delta, new_graph)
from core.index.index_search import Allowed, Hits, Params, Searching, member, normalised  # noqa: F401
from core.storage.vector_keys import Fingerprint

FORMAT = files.FORMAT
_FREE_KEY = (1 << 64) - 1  # usearch reserves the all-ones key for empty slots
_digest = files.digest
_member = member
_NOKEYS = np.zeros(0, np.uint64)


def _minus(a: Fingerprint, b: Fingerprint) -> Fingerprint:
    return Fingerprint(a.count - b.count, (a.key_sum - b.key_sum) % (1 << 64),
                       a.key_xor ^ b.key_xor)


def _plus(a: Fingerprint, b: Fingerprint) -> Fingerprint:
    return Fingerprint(a.count + b.count, (a.key_sum + b.key_sum) % (1 << 64),
                       a.key_xor ^ b.key_xor)


class VectorIndex(Searching):
    """One (model, dim) index: open/create, add/remove/save (writers), search (everyone)."""

    def __init__(self, path: Path, manifest: dict, base, writable: bool, lock_file=None,
                 deltas=None):
        self.path, self.manifest = Path(path), manifest
        self.model, self.dim = manifest["model"], int(manifest["dim"])
        self.params = Params(**manifest["params"])
        self._graph, self._keys, self._vecs = base
        self.writable, self._lock_file = writable, lock_file
        self._mutex = threading.Lock()  # one usearch call at a time per index
        self._graph_holds_new = False   # True while building a fresh base (create, reset)
        tomb, dk, dv = deltas if deltas is not None else (
            _NOKEYS, _NOKEYS, np.zeros((0, self.dim), np.float16))
        # Base rows that no longer count, and the rows held outside the base (the deltas'
        # live rows, then this writer's new ones) in chunks, merged lazily by key.
        # (Searched as tombstones in the sorted base: the cost of the tombstones, not the base.)
        self._dead = tomb[member(self._keys, tomb)] if tomb.size else _NOKEYS
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = [(dk, dv)] if dk.size else []
        self._pending = dk
        # This writer's changes since its last save: tombstones and keys of new rows.
        self._tomb, self._added = _NOKEYS, _NOKEYS

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, model: str, dim: int,
               params: Params = Params()) -> "VectorIndex":
        """An empty writable index; nothing is written until save(), which writes a base."""
        if int(dim) <= 0:
            raise ValueError(f"embedding dimension must be positive, not {dim}")
        path = Path(path)
        lock = files.writer_lock(path)
        manifest = {"format": FORMAT, "model": str(model), "dim": int(dim), "count": 0,
                    "generation": 0, "params": params.__dict__.copy(), "deltas": []}
        ix = cls(path, manifest, (new_graph(dim, params, True), _NOKEYS,
                                  np.zeros((0, int(dim)), np.float16)), True, lock)
        ix._graph_holds_new = True
        return ix

    @classmethod
    def open(cls, path: str | Path, model: str, dim: int, expected: Fingerprint | None = None,
             stamp: str | None = None, writable: bool = False) -> "VectorIndex":
        """Open the saved index, checked against what the caller knows of the store.

        Raises an IndexUnusable subclass — IndexMissing, IndexOtherModel, IndexWrongDim,
        IndexCorrupt, IndexStale (fingerprint or stamp differs) — and never returns an index
        that fails a check. The base is memory-mapped; deltas are read into memory.
        """
        path = Path(path)
        lock = files.writer_lock(path) if writable else None
        try:
            for attempt in range(5):
                try:
                    ix = cls._open_once(path, model, int(dim), writable, lock)
                    break
                except FileNotFoundError:
                    # A writer swapped generations between our manifest read and file open.
                    if attempt == 4 or not path.exists():
                        raise IndexMissing(path, "no manifest") from None
            ix._check(expected, stamp)
            return ix
        except BaseException:
            if lock is not None:
                lock.close()
            raise

    @staticmethod
    def _manifest(path: Path, model: str, dim: int) -> dict:
        try:
            manifest = files.read_manifest(path)
            [manifest["files"][k]["name"] for k in ("graph", "keys", "vecs")]
            int(manifest["count"])
            Params(**manifest["params"])
            [(d["lo"], d["hi"], d["files"]) for d in manifest.get("deltas", [])]
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise IndexCorrupt(path, f"unreadable manifest: {e}") from None
        if manifest.get("format") not in files.FORMATS:
            raise IndexCorrupt(path, f"manifest format {manifest.get('format')!r}")
        if manifest["model"] != str(model):
            raise IndexOtherModel(path, f"built for {manifest['model']!r}, not {model!r}")
        if int(manifest["dim"]) != dim:
            raise IndexWrongDim(path, f"{manifest['dim']}-d vectors, not {dim}-d")
        return manifest

    @classmethod
    def _open_once(cls, path, model, dim, writable, lock, base=None):
        manifest = cls._manifest(path, model, dim)
        if base is None:
            base = load_base(path, manifest, dim, in_ram=False)
        return cls(path, manifest, base, writable, lock, live_deltas(path, manifest, dim))

    def _check(self, expected: Fingerprint | None, stamp: str | None) -> None:
        held = self.fingerprint()
        if expected is not None and held != expected:
            raise IndexStale(self.path, f"it holds {held.count} rows, the store {expected.count}"
                             if held.count != expected.count
                             else "its rows differ from the store's")
        if stamp is not None and self.manifest.get("stamp") != stamp:
            raise IndexStale(self.path, f"stamp {self.manifest.get('stamp')!r}, store {stamp!r}")

    def tune(self, **changes) -> "VectorIndex":
        """Change search settings of this open index (expansion_search, rerank, exact_limit,
        max_candidates); the graph's build settings stay as saved."""
        fixed = {"connectivity", "expansion_add"} & set(changes)
        if fixed:
            raise ValueError(f"{', '.join(sorted(fixed))} are fixed when the graph is built")
        self.params = replace(self.params, **changes)
        self._graph.expansion_search = self.params.expansion_search
        return self

    def refreshed(self, expected: Fingerprint | None = None,
                  stamp: str | None = None) -> "VectorIndex":
        """This index, or the newer generation saved since it was opened; the mapped base is
        reused when only deltas changed (a commit), so a refresh costs the deltas' size."""
        try:
            m = files.read_manifest(self.path)
        except (OSError, ValueError):
            m = {}
        if self.writable or (m.get("generation") == self.generation
                             and m.get("files") == self.manifest.get("files")):
            self._check(expected, stamp)
            return self
        if m.get("files") == self.manifest.get("files"):
            try:
                ix = VectorIndex._open_once(self.path, self.model, self.dim, False, None,
                                            (self._graph, self._keys, self._vecs))
                ix.params = self.params
                ix._check(expected, stamp)
                return ix
            except FileNotFoundError:
                pass  # a compaction swapped the base meanwhile: open it afresh
        return VectorIndex.open(self.path, self.model, self.dim, expected, stamp)

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- what it holds -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._keys.size - self._dead.size + self._pending.size)

    @property
    def generation(self) -> int:
        return int(self.manifest.get("generation", 0))

    @property
    def delta_rows(self) -> int:
        """Rows and tombstones held outside the base: what a compaction would fold in."""
        return int(self._pending.size + self._dead.size)

    def keys(self) -> np.ndarray:
        """Every key held, sorted (uint64)."""
        if not self._dead.size and not self._pending.size:
            return np.asarray(self._keys)
        old = np.asarray(self._keys)
        old = old[~member(self._dead, old)] if self._dead.size else old
        return np.union1d(old, self._pending).astype(np.uint64)

    def fingerprint(self) -> Fingerprint:
        """Of every key held; from the base's recorded fingerprint, so it costs the deltas."""
        if self._graph_holds_new:
            return Fingerprint.of(self.keys())
        base = base_fp(self.manifest)
        return _plus(_minus(base, Fingerprint.of(self._dead)), Fingerprint.of(self._pending))

    def diff(self, store_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys the store has and the index lacks, keys the index has and the store lacks):
        the repair a writer applies instead of a full rebuild after a missed update."""
        mine, theirs = self.keys(), np.unique(np.asarray(store_keys, np.uint64))
        return np.setdiff1d(theirs, mine), np.setdiff1d(mine, theirs)

    def contains(self, keys) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        return self._locate(keys)[0] | member(self._pending, keys)

    def vectors(self, keys) -> np.ndarray:
        """The stored (unit, float16-rounded) vectors of `keys` as float32; KeyError if absent."""
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        found, out = self._fetch(keys)
        out = out.astype(np.float32)
        if not found.all():
            raise KeyError(f"{int((~found).sum())} keys are not in the index, e.g. "
                           f"{int(keys[~found][0])}")
        return out

    def saved_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, float16 unit vectors) of every row, key-sorted: memory-mapped when the base
        holds them all (what core.index.patterns.find_patterns clusters without a float32 copy),
        gathered into memory while deltas exist."""
        if not self._dead.size and not self._pending.size:
            return self._keys, self._vecs
        keys = self.keys()
        return keys, self._fetch(keys)[1]

    def iter_vectors(self, chunk: int = 65536):
        """(keys, float32 vectors) in chunks of every row — for clustering every moment."""
        keys = self.keys()
        for lo in range(0, keys.size, chunk):
            yield keys[lo:lo + chunk], self._fetch(keys[lo:lo + chunk])[1].astype(np.float32)

    def _locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, row) of keys among the base rows that still count."""
        if self._keys.size == 0:
            return np.zeros(keys.shape, bool), np.zeros(keys.shape, np.int64)
        rows = np.searchsorted(self._keys, keys)
        rows[rows == self._keys.size] = 0
        found = np.asarray(self._keys[rows]) == keys
        if self._dead.size:
            found &= ~member(self._dead, keys)
        return found, rows

    def _fetch(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, float16 vectors of the found keys in their order): deltas, then base."""
        found, rows = self._locate(keys)
        new = member(self._pending, keys) if self._pending.size else np.zeros(keys.shape, bool)
        r = rows[found]
        if r.size < 2 or np.all(r[1:] >= r[:-1]):
            saved = np.asarray(self._vecs[r])  # one in-order gather (filters come sorted)
        else:
            order = np.argsort(r, kind="stable")
            saved = np.empty((r.size, self.dim), np.float16)
            saved[order] = self._vecs[r[order]]
        if not new.any():
            return found, saved
        hit = found | new
        out = np.empty((int(hit.sum()), self.dim), np.float16)
        slot = np.cumsum(hit) - 1
        out[slot[found]] = saved
        pk, pv = self._new_rows()
        out[slot[new]] = pv[np.searchsorted(pk, keys[new])]
        return hit, out

    def _new_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows outside the base as one key-sorted (keys, float16 vectors) pair."""
        if len(self._chunks) != 1 or not np.array_equal(self._chunks[0][0], self._pending):
            keys = np.concatenate([c[0] for c in self._chunks] or [_NOKEYS])
            vecs = np.concatenate([c[1] for c in self._chunks]
                                  or [np.zeros((0, self.dim), np.float16)])
            order = np.argsort(keys, kind="stable")
            self._chunks = [(keys[order], vecs[order])]
        return self._chunks[0]

    # ---- writing -----------------------------------------------------------------------
    def _require_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path}: opened read-only (memory-mapped); open it with "
                                  "writable=True to change it")

    def add(self, keys, vectors) -> int:
        """Add rows; a key already held is replaced. Returns how many rows were added."""
        self._require_writable()
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        v = normalised(vectors, self.dim)
        if v.shape[0] != keys.size:
            raise ValueError(f"{keys.size} keys for {v.shape[0]} vectors")
        if keys.size == 0:
            return 0
        if np.unique(keys).size != keys.size:
            raise ValueError("the same key appears twice in one add (two segment ids with one "
                             "64-bit key, or a duplicated row)")
        if (keys == _FREE_KEY).any():
            raise ValueError("key 2^64-1 is reserved by the index; that segment id cannot be "
                             "indexed")
        with self._mutex:
            self._drop(keys)
            # A delta's row supersedes any earlier row of its key: its key is a tombstone too.
            self._tomb = np.union1d(self._tomb, keys)
            if self._graph_holds_new:
                self._graph.add(keys, v, threads=0)
            self._chunks.append((keys, v.astype(np.float16)))
            self._pending = np.sort(np.concatenate([self._pending, keys]))
            self._added = np.union1d(self._added, keys)
        return int(keys.size)

    def remove(self, keys) -> int:
        """Remove rows (keys not held are ignored). Returns how many were held."""
        self._require_writable()
        keys = np.unique(np.asarray(keys, dtype=np.uint64).ravel())
        with self._mutex:
            held = self._drop(keys)
            self._tomb = np.union1d(self._tomb, keys[held])
            return int(held.sum())

    def _drop(self, keys: np.ndarray) -> np.ndarray:
        held = self.contains(keys)
        if self._graph_holds_new and held.any():
            self._graph.remove(keys[held])
        found, _ = self._locate(keys)
        self._dead = np.union1d(self._dead, keys[found]).astype(np.uint64)
        if self._pending.size and member(self._pending, keys).any():
            gone = np.sort(keys)
            self._chunks = [(ck[~member(gone, ck)], cv[~member(gone, ck)])
                            for ck, cv in self._chunks]
            self._pending = self._pending[~member(gone, self._pending)]
            self._added = self._added[~member(gone, self._added)]
        return held

    def reset(self) -> None:
        """Hold nothing, and write the next save() as a fresh base (a rebuild from the store
        keeps its writer lock through this)."""
        self._require_writable()
        with self._mutex:
            self.manifest = dict(self.manifest, count=0, key_sum=0, key_xor=0, deltas=[])
            self._graph = new_graph(self.dim, self.params, True)
            self._keys, self._vecs = _NOKEYS, np.zeros((0, self.dim), np.float16)
            self._dead, self._chunks, self._pending = _NOKEYS, [], _NOKEYS
            self._tomb, self._added = _NOKEYS, _NOKEYS
            self._graph_holds_new = True

    def save(self, stamp: str | None = None) -> None:
        """Publish this writer's changes: a delta generation (or a fresh base after create or
        reset), then a new manifest renamed over the old one.

        `stamp` is recorded for open(stamp=...) to compare, e.g. the store's latest ingest time,
        so a re-ingest that kept the same segment ids but was never applied is caught."""
        self._require_writable()
        with self._mutex, files.swapping(self.path):
            stamp = stamp if stamp is not None else self.manifest.get("stamp")
            if self._graph_holds_new:
                m = index_generations.write_base(self, stamp)
                base = None
            else:
                m = index_generations.write_delta(self, stamp)
                base = (self._graph, self._keys, self._vecs) \
                    if m["files"] == self.manifest["files"] else None
            files.publish(self.path, m, secrets.token_hex(3))
            files.sweep(self.path, m)
            fresh = VectorIndex._open_once(self.path, self.model, self.dim, True, None, base)
        params, lock = self.params, self._lock_file
        self.__dict__.update(fresh.__dict__)
        self.params, self._lock_file = params, lock

    def _merged(self, keys_path: Path, vecs_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Base rows that still count plus the rows outside it, sorted by key, written as .npy
        files (a new base's keys and vectors)."""
        old = np.asarray(self._keys)
        keep = ~member(self._dead, old) if self._dead.size else np.ones(old.size, bool)
        # New rows are read from their chunks in place: no extra copy of a large build.
        chunks = [c for c in self._chunks if c[0].size]
        bounds = np.cumsum([0] + [c[0].size for c in chunks])
        keys = np.concatenate([old[keep]] + [c[0] for c in chunks])
        order = np.argsort(keys, kind="stable")
        n_old = int(keep.sum())
        kept_rows = np.flatnonzero(keep)
        np.save(keys_path, keys[order])
        out = np.lib.format.open_memmap(vecs_path, mode="w+", dtype=np.float16,
                                        shape=(keys.size, self.dim))
        step = 65536
        for lo in range(0, keys.size, step):
            idx = order[lo:lo + step]
            from_old = idx < n_old
            block = np.empty((idx.size, self.dim), np.float16)
            if from_old.any():
                block[from_old] = self._vecs[kept_rows[idx[from_old]]]
            if (~from_old).any():
                at = np.flatnonzero(~from_old)
                pos = idx[at] - n_old
                which = np.searchsorted(bounds, pos, side="right") - 1
                for ci in np.unique(which):
                    m = which == ci
                    block[at[m]] = chunks[ci][1][pos[m] - bounds[ci]]
            out[lo:lo + idx.size] = block
        out.flush()
        del out
        return np.load(keys_path, mmap_mode="r"), np.load(vecs_path, mmap_mode="r")


def build(path: str | Path, model: str, dim: int, batches: Iterable[tuple], *,
          params: Params = Params(), stamp: str | None = None) -> VectorIndex:
    """Build the index afresh from (keys, vectors) batches, save it, and return it read-only."""
    w = VectorIndex.create(path, model, dim, params)
    try:
        for keys, vectors in batches:
            w.add(keys, vectors)
        w.save(stamp=stamp)
    finally:
        w.close()
    return VectorIndex.open(path, model, dim)
