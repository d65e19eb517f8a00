"""Writing an ANN index's generations (core.index.vector_index): a delta per save, a base after a
create, reset or compaction.

A save appends one delta: the rows its writer added and its tombstones. Trailing deltas are
merged while the one before is no larger than the one being written (a binary counter), so a
store holds O(log n) deltas and a commit rewrites a few small files, never the base.
"""
from __future__ import annotations

import secrets

import numpy as np

from core.index import index_files as files
from core.index.index_search import member
from core.storage.vector_keys import Fingerprint

MAX_DELTAS = 24
EXT = {"graph": "usearch", "keys": "keys.npy", "vecs": "vecs.npy"}


def _tag(gen: int) -> str:
    return f"{gen}-{secrets.token_hex(3)}"


def write_base(ix, stamp) -> dict:
    """Write `ix` (a fresh writer: every row in its in-memory graph) as a new base."""
    gen = ix.generation + 1
    folder, stem, tag = ix.path.parent, ix.path.stem, _tag(gen)
    paths = {k: folder / f"{stem}.{tag}.{ext}" for k, ext in EXT.items()}
    keys, _ = ix._merged(paths["keys"], paths["vecs"])
    ix._graph.save(str(paths["graph"]))
    fp = Fingerprint.of(keys)
    return dict(ix.manifest, format=files.FORMAT, generation=gen, count=fp.count,
                key_sum=fp.key_sum, key_xor=fp.key_xor, stamp=stamp, base_generation=gen,
                deltas=[], files={k: files.entry(p) for k, p in paths.items()})


def _size(d: dict) -> int:
    return int(d["count"]) + int(d["tombs"])


def write_delta(ix, stamp) -> dict:
    """The manifest after appending `ix`'s unsaved changes as a delta to the published one
    (re-read here, under the swap lock: a compaction may have replaced the base)."""
    from core.index.index_files import load_delta
    try:
        m = files.read_manifest(ix.path)
    except (OSError, ValueError):
        m = ix.manifest
    gen = int(m.get("generation", 0)) + 1
    if not ix._added.size and not ix._tomb.size:
        return dict(m, generation=gen, stamp=stamp)
    keys, tomb = ix._added, ix._tomb
    vecs = ix._fetch(keys)[1]
    new = {"lo": gen, "hi": gen, "count": int(keys.size), "tombs": int(tomb.size)}
    deltas = list(m.get("deltas", []))
    while deltas and (_size(deltas[-1]) <= _size(new) or len(deltas) >= MAX_DELTAS):
        prev = deltas.pop()
        pk, pv, pt = load_delta(ix.path, prev, ix.dim)
        keep = ~member(tomb, pk)
        keys = np.concatenate([pk[keep], keys])
        vecs = np.concatenate([pv[keep], vecs])
        order = np.argsort(keys, kind="stable")
        keys, vecs, tomb = keys[order], vecs[order], np.union1d(pt, tomb)
        new = {"lo": prev["lo"], "hi": gen, "count": int(keys.size), "tombs": int(tomb.size)}
    folder, stem, tag = ix.path.parent, ix.path.stem, _tag(gen)
    new["files"] = {"delta": files.save_npz(folder / f"{stem}.{tag}.d.npz", keys=keys,
                                            vecs=vecs, tomb=tomb)}
    return dict(m, format=files.FORMAT, generation=gen, stamp=stamp, deltas=deltas + [new])
