"""Approximate nearest neighbours over segment embeddings: an index file beside the store.

DuckDB stays the source of truth; this index is derived, rebuildable and never trusted when it
does not match the store. One index per (model, embedding dimension), in a folder beside the
database (`index_path`). Each saved generation is three files plus a manifest:

    <stem>.json                 manifest: model, dim, count, key fingerprint, file sizes+digests
    <stem>.<gen>.usearch        HNSW graph over int8 copies of the vectors (usearch, cosine)
    <stem>.<gen>.keys.npy       the keys, sorted (uint64)
    <stem>.<gen>.vecs.npy       the L2-normalised vectors as float16, rows aligned with keys

Why usearch: both usearch and faiss-cpu were tried on this machine (50k × 1024, cosine, M=16):
build and query speed and recall were alike, but usearch removes keys natively (faiss's HNSW
cannot, so every erasure would be a tombstone until a rebuild), takes our 64-bit keys as they
are, and views its whole file memory-mapped, graph included (faiss reads the graph into RAM and
aborts the process when a mapped index is modified). Its Python binding has no filtered search,
so filters are handled here (see `VectorIndex.search`).

Why a float16 matrix next to the int8 graph: usearch hands back stored vectors one small array
per key (~8 µs each), too slow for exact search over a selective filter (10k rows), and
int8 distances cost ~5 points of recall@10. The key-sorted float16 matrix gives exact scores in
bulk: ANN candidates are re-ranked with it, and selective filters are answered exactly from it.
int8 halves the graph's file and speeds up both building and traversal.

Keys are core.vector_keys' 64-bit hashes of segment ids, which DuckDB computes too, so the
store asks SQL for the keys a filter admits, and for the fingerprint of the rows it holds.

Writers and readers: `open()` maps the files read-only; a writer opens with writable=True, which
loads the graph into RAM (a mapped usearch index must never be modified), applies add/remove,
and `save()` writes a new generation's files, then swaps the manifest by rename. Readers keep
their old mappings valid (the old files are unlinked, not overwritten) and pick up the new
generation with `refreshed()`.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from core.vector_keys import Fingerprint

FORMAT = 1
_FREE_KEY = (1 << 64) - 1  # usearch reserves the all-ones key for empty slots


class IndexUnusable(Exception):
    """The index file cannot be trusted for this store; rebuild it. `reason` says why."""
    reason = "unusable"

    def __init__(self, path: Path, detail: str):
        super().__init__(f"{path}: {self.reason} index ({detail})")
        self.path, self.detail = path, detail


class IndexMissing(IndexUnusable):
    reason = "missing"


class IndexStale(IndexUnusable):
    reason = "stale"


class IndexOtherModel(IndexUnusable):
    reason = "other model"


class IndexWrongDim(IndexUnusable):
    reason = "wrong dim"


class IndexCorrupt(IndexUnusable):
    reason = "corrupt"


@dataclass(frozen=True)
class Params:
    """HNSW settings, chosen on 1M × 1024 clustered vectors (bench/similarity.py): recall@10
    there is bounded by the graph walk, not by int8 (rerank 3 or 10 gave the same), rising
    0.88 → 0.92 → 0.94 → 0.95 with ef_search 256 → 512 → 1024 → 1536 while p50 stayed under
    4 ms; ef_add 128 lifts recall at a given ef_search (0.88 vs 0.81 at 64) but doubles the
    build. Search settings can be changed on an open index with tune()."""
    connectivity: int = 16       # graph degree M
    expansion_add: int = 64      # ef at construction
    expansion_search: int = 1536  # ef when querying: recall@10 0.95 at 1M, p50 ~3 ms
    rerank: int = 3              # candidates fetched per wanted hit, re-scored exactly
    exact_limit: int = 20_000    # allowed sets up to this size are searched exactly
    max_candidates: int = 8192   # oversampled ANN gives up past this and goes exact


@dataclass(frozen=True)
class Hits:
    keys: np.ndarray        # uint64, best first
    similarity: np.ndarray  # float32 cosine, descending
    method: str             # "ann", "ann-filtered" or "exact"

    def __len__(self) -> int:
        return int(self.keys.size)


@dataclass
class Allowed:
    """A filter's admitted keys, sorted and unique; build once and reuse across queries."""
    keys: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, keys) -> "Allowed":
        if isinstance(keys, Allowed):
            return keys
        k = np.asarray(keys, dtype=np.uint64).ravel()
        if k.size > 1 and not np.all(k[1:] > k[:-1]):
            k = np.unique(k)
        return cls(k)

    def __len__(self) -> int:
        return int(self.keys.size)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return _member(self.keys, keys)


def index_path(db_path: str | Path, model: str, dim: int) -> Path:
    """The manifest path of the index for (model, dim) beside the database file."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(str(model)).name).strip("-")[:40] or "model"
    tag = hashlib.sha1(str(model).encode()).hexdigest()[:8]
    return Path(f"{db_path}.ann") / f"{slug}-{tag}-{int(dim)}.json"


def normalised(vectors, dim: int, what: str = "vectors") -> np.ndarray:
    """(n, dim) float32 rows of unit length; zero rows stay zero; clear errors otherwise."""
    v = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    if v.ndim != 2 or v.shape[1] != dim:
        got = v.shape[-1] if v.ndim >= 1 else 0
        raise ValueError(f"{what} have {got} dimensions but the index holds {dim}-dimensional "
                         "embeddings; they must come from the same model")
    if not np.isfinite(v).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    np.divide(v, norms, out=v, where=norms > 0)
    return v


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of `keys` are in the sorted array `sorted_keys`."""
    keys = np.asarray(keys, dtype=np.uint64)
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos[pos == sorted_keys.size] = 0
    return sorted_keys[pos] == keys


def _digest(path: Path) -> str:
    """blake2b of the head, the tail and 32 spaced 4 KiB blocks: catches truncation and garbage
    without reading gigabytes at open time (the size is checked separately)."""
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        spots = [0, max(0, size - 65536)] + [size * i // 33 for i in range(1, 33)]
        for pos, n in zip(spots, [65536, 65536] + [4096] * 32):
            f.seek(pos)
            h.update(f.read(n))
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class VectorIndex:
    """One (model, dim) index: open/create, add/remove/save (writers), search (everyone)."""

    def __init__(self, path: Path, manifest: dict, graph, keys: np.ndarray, vecs: np.ndarray,
                 writable: bool, lock_file=None):
        self.path, self.manifest = Path(path), manifest
        self.model, self.dim = manifest["model"], int(manifest["dim"])
        self.params = Params(**manifest["params"])
        self._graph, self._keys, self._vecs = graph, keys, vecs
        self.writable, self._lock_file = writable, lock_file
        self._mutex = threading.Lock()  # one usearch call at a time per index
        # A writer's changes since the last save: keys whose saved row no longer counts, and
        # new rows in chunks (a key re-added replaces its earlier row).
        self._dead = np.zeros(0, np.uint64)
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending = np.zeros(0, np.uint64)  # sorted keys of the new rows

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, model: str, dim: int,
               params: Params = Params()) -> "VectorIndex":
        """An empty writable index; nothing is written until save()."""
        from usearch.index import Index
        if int(dim) <= 0:
            raise ValueError(f"embedding dimension must be positive, not {dim}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _writer_lock(path)
        graph = Index(ndim=int(dim), metric="cos", dtype="i8", connectivity=params.connectivity,
                      expansion_add=params.expansion_add,
                      expansion_search=params.expansion_search)
        manifest = {"format": FORMAT, "model": str(model), "dim": int(dim), "count": 0,
                    "generation": 0, "params": params.__dict__.copy()}
        return cls(path, manifest, graph, np.zeros(0, np.uint64),
                   np.zeros((0, int(dim)), np.float16), True, lock)

    @classmethod
    def open(cls, path: str | Path, model: str, dim: int, expected: Fingerprint | None = None,
             stamp: str | None = None, writable: bool = False) -> "VectorIndex":
        """Open the saved index, checked against what the caller knows of the store.

        Raises an IndexUnusable subclass — IndexMissing, IndexOtherModel, IndexWrongDim,
        IndexCorrupt, IndexStale (fingerprint or stamp differs) — and never returns an index
        that fails a check. Read-only opens are memory-mapped; writable ones load the graph.
        """
        path = Path(path)
        lock = _writer_lock(path) if writable else None
        try:
            for attempt in range(3):
                try:
                    return cls._open_once(path, model, int(dim), expected, stamp, writable, lock)
                except FileNotFoundError:
                    # A writer swapped generations between our manifest read and file open.
                    if attempt == 2 or not path.exists():
                        raise IndexMissing(path, "no manifest") from None
        except BaseException:
            if lock is not None:
                lock.close()
            raise

    @classmethod
    def _open_once(cls, path, model, dim, expected, stamp, writable, lock):
        from usearch.index import Index
        try:
            manifest = json.loads(path.read_text())
            files, count = manifest["files"], int(manifest["count"])
            names = [files[k]["name"] for k in ("graph", "keys", "vecs")]
            Params(**manifest["params"])
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise IndexCorrupt(path, f"unreadable manifest: {e}") from None
        if manifest.get("format") != FORMAT:
            raise IndexCorrupt(path, f"manifest format {manifest.get('format')!r}")
        if manifest["model"] != str(model):
            raise IndexOtherModel(path, f"built for {manifest['model']!r}, not {model!r}")
        if int(manifest["dim"]) != dim:
            raise IndexWrongDim(path, f"{manifest['dim']}-d vectors, not {dim}-d")
        paths = [path.parent / n for n in names]
        for p, k in zip(paths, ("graph", "keys", "vecs")):
            if not p.exists():
                raise FileNotFoundError(p)
            if p.stat().st_size != files[k]["size"] or _digest(p) != files[k]["digest"]:
                raise IndexCorrupt(path, f"{p.name} does not match its manifest entry")
        try:
            keys = np.load(paths[1], mmap_mode="r")
            vecs = np.load(paths[2], mmap_mode="r")
            meta = Index.metadata(str(paths[0]))
        except Exception as e:  # usearch and numpy raise various types on garbage
            raise IndexCorrupt(path, f"unreadable files: {e}") from None
        if (keys.dtype != np.uint64 or keys.shape != (count,) or vecs.dtype != np.float16
                or vecs.shape != (count, dim) or meta is None
                or int(meta["dimensions"]) != dim or int(meta["count_present"]) != count):
            raise IndexCorrupt(path, "file shapes disagree with the manifest")
        held = Fingerprint.of(keys)
        if held != Fingerprint(count, int(manifest["key_sum"]), int(manifest["key_xor"])):
            raise IndexCorrupt(path, "its keys do not match the manifest's fingerprint")
        if expected is not None and held != expected:
            raise IndexStale(path, f"it holds {held.count} rows, the store {expected.count}"
                             if held.count != expected.count
                             else "its rows differ from the store's")
        if stamp is not None and manifest.get("stamp") != stamp:
            raise IndexStale(path, f"stamp {manifest.get('stamp')!r}, store {stamp!r}")
        p = Params(**manifest["params"])
        graph = Index(ndim=dim, metric="cos", dtype="i8", connectivity=p.connectivity,
                      expansion_add=p.expansion_add, expansion_search=p.expansion_search,
                      enable_key_lookups=writable)
        try:
            # Loading copies the graph into RAM (writers); viewing maps it (readers).
            (graph.load if writable else graph.view)(str(paths[0]))
        except Exception as e:
            raise IndexCorrupt(path, f"{paths[0].name}: {e}") from None
        if len(graph) != count:
            raise IndexCorrupt(path, f"graph holds {len(graph)} vectors, manifest {count}")
        return cls(path, manifest, graph, keys, vecs, writable, lock)

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
        """This index, or the newer generation a writer has saved since it was opened."""
        try:
            gen = json.loads(self.path.read_text()).get("generation")
        except (OSError, ValueError):
            gen = None
        if gen == self.manifest.get("generation") or self.writable:
            return self
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

    def keys(self) -> np.ndarray:
        """Every key held, sorted (uint64)."""
        if not self._dead.size and not self._pending.size:
            return np.asarray(self._keys)
        old = np.asarray(self._keys)
        old = old[~_member(self._dead, old)] if self._dead.size else old
        return np.union1d(old, self._pending).astype(np.uint64)

    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self.keys())

    def diff(self, store_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys the store has and the index lacks, keys the index has and the store lacks):
        the repair a writer applies instead of a full rebuild after a missed update."""
        mine, theirs = self.keys(), np.unique(np.asarray(store_keys, np.uint64))
        return np.setdiff1d(theirs, mine), np.setdiff1d(mine, theirs)

    def contains(self, keys) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        return self._locate(keys)[0] | _member(self._pending, keys)

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
        """(keys, float16 unit vectors) of the saved generation, key-sorted and memory-mapped:
        what core.patterns.find_patterns clusters without a float32 copy of every embedding."""
        if self._dead.size or self._pending.size:
            raise RuntimeError("save() before reading every vector")
        return self._keys, self._vecs

    def iter_vectors(self, chunk: int = 65536):
        """(keys, float32 vectors) in chunks of the saved rows — for clustering every moment."""
        if self._dead.size or self._pending.size:
            raise RuntimeError("save() before reading every vector")
        for lo in range(0, self._keys.size, chunk):
            yield (np.asarray(self._keys[lo:lo + chunk]),
                   np.asarray(self._vecs[lo:lo + chunk], dtype=np.float32))

    def _locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, row) of keys among the saved rows that still count."""
        if self._keys.size == 0:
            return np.zeros(keys.shape, bool), np.zeros(keys.shape, np.int64)
        rows = np.searchsorted(self._keys, keys)
        rows[rows == self._keys.size] = 0
        found = np.asarray(self._keys[rows]) == keys
        if self._dead.size:
            found &= ~_member(self._dead, keys)
        return found, rows

    def _fetch(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, float16 vectors of the found keys in their order): new rows, then saved."""
        found, rows = self._locate(keys)
        new = _member(self._pending, keys) if self._pending.size else np.zeros(keys.shape, bool)
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
        """The new rows as one key-sorted (keys, float16 vectors) pair."""
        if len(self._chunks) != 1 or not np.array_equal(self._chunks[0][0], self._pending):
            keys = np.concatenate([c[0] for c in self._chunks])
            vecs = np.concatenate([c[1] for c in self._chunks])
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
            self._graph.add(keys, v, threads=0)
            self._chunks.append((keys, v.astype(np.float16)))
            self._pending = np.sort(np.concatenate([self._pending, keys]))
        return int(keys.size)

    def remove(self, keys) -> int:
        """Remove rows (keys not held are ignored). Returns how many were held."""
        self._require_writable()
        keys = np.unique(np.asarray(keys, dtype=np.uint64).ravel())
        with self._mutex:
            return self._drop(keys)

    def _drop(self, keys: np.ndarray) -> int:
        held = self.contains(keys)
        if held.any():
            self._graph.remove(keys[held])
        found, _ = self._locate(keys)
        self._dead = np.union1d(self._dead, keys[found]).astype(np.uint64)
        if self._pending.size and _member(self._pending, keys).any():
            gone = np.sort(keys)
            self._chunks = [(ck[~_member(gone, ck)], cv[~_member(gone, ck)])
                            for ck, cv in self._chunks]
            self._pending = self._pending[~_member(gone, self._pending)]
        return int(held.sum())

    def save(self, stamp: str | None = None) -> None:
        """Write a new generation and swap the manifest atomically (files first, then rename).

        `stamp` is recorded for open(stamp=...) to compare, e.g. the store's latest ingest time,
        so a re-ingest that kept the same segment ids but was never applied is caught."""
        self._require_writable()
        with self._mutex:
            gen = self.generation + 1
            stem = self.path.stem
            tag = f"{gen}-{secrets.token_hex(3)}"
            names = {k: f"{stem}.{tag}.{ext}" for k, ext in
                     (("graph", "usearch"), ("keys", "keys.npy"), ("vecs", "vecs.npy"))}
            folder = self.path.parent
            keys, vecs = self._merged(folder / names["keys"], folder / names["vecs"])
            self._graph.save(str(folder / names["graph"]))
            files = {}
            for k, name in names.items():
                p = folder / name
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
                files[k] = {"name": name, "size": p.stat().st_size, "digest": _digest(p)}
            fp = Fingerprint.of(keys)
            manifest = dict(self.manifest, generation=gen, count=fp.count, key_sum=fp.key_sum,
                            key_xor=fp.key_xor, files=files,
                            stamp=stamp if stamp is not None else self.manifest.get("stamp"))
            tmp = self.path.with_name(f".{self.path.name}.{tag}.tmp")
            _fsync_write(tmp, json.dumps(manifest, indent=1).encode())
            os.replace(tmp, self.path)
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self.manifest, self._keys, self._vecs = manifest, keys, vecs
            self._dead = np.zeros(0, np.uint64)
            self._chunks, self._pending = [], np.zeros(0, np.uint64)
            # Older generations go; readers that map them keep them alive until they let go.
            keep = set(names.values()) | {self.path.name}
            for p in folder.glob(f"{stem}.*"):
                if p.name not in keep and p.name != f"{stem}.lock":
                    p.unlink(missing_ok=True)
            for p in folder.glob(f".{self.path.name}.*.tmp"):
                p.unlink(missing_ok=True)

    def _merged(self, keys_path: Path, vecs_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Saved rows that still count plus new rows, sorted by key, written as .npy files."""
        old = np.asarray(self._keys)
        keep = ~_member(self._dead, old) if self._dead.size else np.ones(old.size, bool)
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
        with open(keys_path, "rb") as f:
            os.fsync(f.fileno())
        return np.load(keys_path, mmap_mode="r"), np.load(vecs_path, mmap_mode="r")

    # ---- searching ---------------------------------------------------------------------
    def search(self, query, k: int = 10, allowed=None, exclude=None) -> Hits:
        """The k held rows most similar to `query` (cosine), best first.

        allowed: None (every row) or the keys a filter admits (array or a reusable Allowed).
        Up to `Params.exact_limit` admitted rows are scored exactly from the float16 matrix;
        broader filters take oversampled ANN candidates and keep the admitted ones, widening
        the net (×4 per round) and finally scoring every admitted row exactly, so k hits come
        back whenever k admitted rows are held. exclude: keys never returned (the query's own).
        """
        q = normalised(query, self.dim, "the query").ravel()
        if not q.any():
            raise ValueError("the query vector is all zeros")
        bar = Allowed.of(exclude if exclude is not None else np.zeros(0, np.uint64))
        if k <= 0 or len(self) == 0:
            return _empty()
        if allowed is None:
            return self._ann(q, k, None, bar)
        allowed = Allowed.of(allowed)
        if len(allowed) <= self.params.exact_limit:
            return self._exact(q, k, allowed.keys, bar)
        return self._ann(q, k, allowed, bar)

    def _ann(self, q: np.ndarray, k: int, allowed: Allowed | None, bar: Allowed) -> Hits:
        n = len(self)
        share = 1.0 if allowed is None else len(allowed) / n
        want = (k * self.params.rerank + len(bar)) / max(share, 1e-9)
        count = min(n, max(k, int(np.ceil(want))))
        method = "ann" if allowed is None else "ann-filtered"
        while True:
            with self._mutex:
                cand = np.asarray(self._graph.search(q, count).keys, dtype=np.uint64)
            ok = ~bar.contains(cand)
            if allowed is not None:
                ok &= allowed.contains(cand)
            # With k admitted candidates, the best k of them are the best k admitted rows among
            # all that the graph ranked above its last candidate.
            hits = self._score(q, k, cand[ok], method)
            if len(hits) >= k:
                return hits
            if count >= min(n, self.params.max_candidates):
                break
            count = min(n, self.params.max_candidates, count * 4)
        pool = allowed.keys if allowed is not None else self.keys()
        return self._exact(q, k, pool, bar)

    def _exact(self, q: np.ndarray, k: int, pool: np.ndarray, bar: Allowed) -> Hits:
        if len(bar):
            pool = pool[~bar.contains(pool)]
        best_k, best_s = np.zeros(0, np.uint64), np.zeros(0, np.float32)
        step = 32768
        for lo in range(0, pool.size, step):
            hits = self._score(q, k, pool[lo:lo + step], "exact")
            best_k = np.concatenate([best_k, hits.keys])
            best_s = np.concatenate([best_s, hits.similarity])
        top = np.argsort(-best_s, kind="stable")[:k]
        return Hits(best_k[top], best_s[top], "exact")

    def _score(self, q: np.ndarray, k: int, cand: np.ndarray, method: str) -> Hits:
        from usearch.index import search as brute_force
        found, vecs = self._fetch(cand)
        cand = cand[found]
        if cand.size == 0:
            return Hits(cand, np.zeros(0, np.float32), method)
        # SimSIMD's float16 kernels: numpy would first convert to float32, 5x slower.
        m = brute_force(vecs, q, min(k, cand.size), "cos", exact=True,
                        threads=1 if cand.size < 100_000 else 0)
        sims = np.clip(1.0 - np.asarray(m.distances, np.float32), -1.0, 1.0)
        return Hits(cand[np.asarray(m.keys, np.int64)], sims, method)


def _empty() -> Hits:
    return Hits(np.zeros(0, np.uint64), np.zeros(0, np.float32), "exact")


def _writer_lock(path: Path):
    """One writer per index: an exclusive, non-blocking lock on <stem>.lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path.with_name(f"{path.stem}.lock"), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise RuntimeError(f"{path}: another writer has this index open") from None
    return f


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
