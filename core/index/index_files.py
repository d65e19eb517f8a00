"""The files of an ANN index (core.index.vector_index): manifest, digests, locks and atomic swaps.

One index is a folder entry per (model, dim) beside the database:

    <stem>.json                       the manifest: what the base and each delta hold
    <stem>.<tag>.usearch              the base's HNSW graph (int8, cosine)
    <stem>.<tag>.keys.npy             the base's keys, sorted (uint64)
    <stem>.<tag>.vecs.npy             the base's unit vectors (float16), rows aligned with keys
    <stem>.<tag>.d.npz                one delta generation: its rows (sorted keys, float16
                                      vectors) and its tombstones

Every file is written under a fresh tag and never overwritten; a change is published by
renaming a new manifest over the old one, so a reader sees the old generation or the new, and
keeps its memory-mapped files valid after a writer unlinks them.

Locks (flock, released by the kernel when a process dies, kill -9 included):
`<stem>.lock` one writer; `<stem>.compact.lock` one compaction; `<stem>.swap.lock` held for the
few milliseconds of a manifest's read-modify-rename by either of them.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.base import places
from core.index.index_search import Params, member
from core.storage.vector_keys import Fingerprint

FORMATS = (1, 2)  # 1: a base only; 2: a base and delta generations
FORMAT = 2
_NOKEYS = np.zeros(0, np.uint64)


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


def index_path(db_path: str | Path, model: str, dim: int) -> Path:
    """The manifest path of the index for (model, dim) beside the database file."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(str(model)).name).strip("-")[:40] or "model"
    tag = hashlib.sha1(str(model).encode()).hexdigest()[:8]
    return places.beside(db_path, places.ANN, resolve=False) / f"{slug}-{tag}-{int(dim)}.json"


def digest(path: Path) -> str:
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


def entry(path: Path) -> dict:
    """A file's manifest entry, after it is on disk for good."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return {"name": path.name, "size": path.stat().st_size, "digest": digest(path)}


def check(folder: Path, e: dict) -> Path:
    """The file of manifest entry `e`, or FileNotFoundError / ValueError if it does not match."""
    p = folder / e["name"]
    if not p.exists():
        raise FileNotFoundError(p)
    if p.stat().st_size != e["size"] or digest(p) != e["digest"]:
        raise ValueError(f"{p.name} does not match its manifest entry")
    return p


def save_npz(path: Path, **arrays: np.ndarray) -> dict:
    """One uncompressed file of several arrays: one fsync for a delta, not three."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return entry(path)


def read_manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def publish(path: Path, manifest: dict, tag: str) -> None:
    """Rename `manifest` over the index's manifest, durably (file, rename, folder)."""
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(manifest, indent=1).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def referenced(manifest: dict) -> set[str]:
    names = {e["name"] for e in manifest.get("files", {}).values()}
    for d in manifest.get("deltas", []):
        names |= {e["name"] for e in d["files"].values()}
    return names


def sweep(path: Path, manifest: dict) -> None:
    """Unlink the files the published manifest no longer names (readers that map them keep
    them until they let go). Hidden files (a compaction's work in progress) are left alone."""
    keep = referenced(manifest) | {path.name}
    stem = path.stem
    for p in path.parent.glob(f"{stem}.*"):
        if p.name not in keep and not p.name.endswith(".lock"):
            p.unlink(missing_ok=True)
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        p.unlink(missing_ok=True)


def writer_lock(path: Path, what: str = "lock", wait: bool = False):
    """An exclusive lock on <stem>.<what>; non-blocking unless `wait` (RuntimeError if held)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path.with_name(f"{path.stem}.{what}"), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        f.close()
        kind = "writer" if what == "lock" else "compaction"
        raise RuntimeError(f"{path}: another {kind} has this index open") from None
    return f


def writing(path: Path) -> bool:
    """Whether a writer holds the index right now (it will publish shortly)."""
    try:
        writer_lock(path).close()
        return False
    except RuntimeError:
        return True


@contextmanager
def swapping(path: Path):
    """Held while a manifest is read, changed and renamed: writer and compaction take turns."""
    f = writer_lock(path, "swap.lock", wait=True)
    try:
        yield
    finally:
        f.close()


# ---- reading a generation -----------------------------------------------------------------
def new_graph(dim: int, p: Params, lookups: bool):
    from usearch.index import Index
    return Index(ndim=int(dim), metric="cos", dtype="i8", connectivity=p.connectivity,
                 expansion_add=p.expansion_add, expansion_search=p.expansion_search,
                 enable_key_lookups=lookups)


# The base a manifest names, as this process last mapped it: its files are never rewritten, so
# while each still has the inode, time, size and sampled digest it was checked with, mapping it
# again (the graph's view walks every node: ~0.1 s at 1M rows) and summing its keys are skipped.
_mapped: dict[str, tuple[tuple, tuple]] = {}


def load_base(path: Path, manifest: dict, dim: int, in_ram: bool):
    """(graph, keys, vecs) of the manifest's base, each checked against it."""
    from usearch.index import Index
    folder, ent, count = path.parent, manifest["files"], int(manifest["count"])
    try:
        graph_p, keys_p, vecs_p = (check(folder, ent[k]) for k in ("graph", "keys", "vecs"))
    except ValueError as e:
        raise IndexCorrupt(path, str(e)) from None
    seen = (tuple((e["name"], e["size"], e["digest"]) for e in (ent["graph"], ent["keys"],
                                                                ent["vecs"])),
            tuple((st.st_ino, st.st_mtime_ns) for st in map(os.stat, (graph_p, keys_p, vecs_p))),
            count, base_fp(manifest), json.dumps(manifest["params"], sort_keys=True), dim)
    got = _mapped.get(str(path))
    if not in_ram and got is not None and got[0] == seen:
        return got[1]
    try:
        keys = np.load(keys_p, mmap_mode="r")
        vecs = np.load(vecs_p, mmap_mode="r")
        meta = Index.metadata(str(graph_p))
    except Exception as e:  # usearch and numpy raise various types on garbage
        raise IndexCorrupt(path, f"unreadable files: {e}") from None
    if (keys.dtype != np.uint64 or keys.shape != (count,) or vecs.dtype != np.float16
            or vecs.shape != (count, dim) or meta is None
            or int(meta["dimensions"]) != dim or int(meta["count_present"]) != count):
        raise IndexCorrupt(path, "file shapes disagree with the manifest")
    if Fingerprint.of(keys) != base_fp(manifest):
        raise IndexCorrupt(path, "its keys do not match the manifest's fingerprint")
    graph = new_graph(dim, Params(**manifest["params"]), in_ram)
    try:
        # Loading copies the graph into RAM (a compaction changes it); viewing maps it.
        (graph.load if in_ram else graph.view)(str(graph_p))
    except Exception as e:
        raise IndexCorrupt(path, f"{graph_p.name}: {e}") from None
    if len(graph) != count:
        raise IndexCorrupt(path, f"graph holds {len(graph)} vectors, manifest {count}")
    if not in_ram:
        _mapped[str(path)] = (seen, (graph, keys, vecs))
    return graph, keys, vecs


def base_fp(manifest: dict) -> Fingerprint:
    return Fingerprint(int(manifest["count"]), int(manifest.get("key_sum", 0)),
                       int(manifest.get("key_xor", 0)))


def load_delta(path: Path, d: dict, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, float16 vectors, tombstones) of one delta, checked against its manifest entry."""
    try:
        with np.load(check(path.parent, d["files"]["delta"])) as z:
            k, v, t = z["keys"], z["vecs"], z["tomb"]
    except (ValueError, KeyError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise IndexCorrupt(path, f"delta {d['lo']}-{d['hi']}: {e}") from None
    if (k.dtype != np.uint64 or v.dtype != np.float16 or t.dtype != np.uint64
            or v.shape != (k.size, dim)):
        raise IndexCorrupt(path, f"delta {d['lo']}-{d['hi']} has the wrong shape")
    return k, v, t


def live_deltas(path: Path, manifest: dict, dim: int):
    """(tombstones of every delta, keys, vectors of the deltas' rows that still count)."""
    tombs, keys, vecs = [], [], []
    for d in manifest.get("deltas", []):
        k, v, t = load_delta(path, d, dim)
        if keys and t.size:  # a later generation's tombstones end earlier deltas' rows
            keep = [~member(t, ks) for ks in keys]
            keys = [ks[m] for ks, m in zip(keys, keep)]
            vecs = [vs[m] for vs, m in zip(vecs, keep)]
        tombs.append(t)
        keys.append(k)
        vecs.append(v)
    tomb = np.unique(np.concatenate(tombs)) if tombs else _NOKEYS
    keys = np.concatenate(keys) if keys else _NOKEYS
    vecs = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float16)
    order = np.argsort(keys, kind="stable")
    return tomb, keys[order], vecs[order]


def scrub_free_slots(graph, dim: int) -> int:
    """Overwrite the vectors of a graph's removed rows before it is saved.

    usearch's remove only marks a slot free: the removed row's int8 vector stays in the saved
    graph file until the slot is reused. After an erasure that is a copy of erased data, so
    every free slot is filled with a constant vector under a reserved key (adds reuse free
    slots first), then freed again. Returns how many slots were overwritten."""
    free = int(graph.stats.nodes) - len(graph)
    if free <= 0:
        return 0
    filler = ((1 << 64) - 2 - np.arange(free, dtype=np.uint64)).astype(np.uint64)
    graph.add(filler, np.full((free, dim), 1e-3, np.float32), threads=0)
    graph.remove(filler)
    return free
