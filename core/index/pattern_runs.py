"""A pattern run: the store's moments clustered (core.index.patterns) and written back to it.

`emoscope patterns` clusters the segments of the largest embedding space straight from the
float16 matrix beside its ANN index (memory-mapped: no float32 copy of a million embeddings),
places every segment on a 2-D map (PCA fitted on a sample), and replaces the `patterns` and
`segment_patterns` rows in one transaction, each row carrying the run id that made it. Readers
see either the previous run or this one, never half of it.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.index import patterns, segment_index
from core.storage.store import Store
from core.base.times import utc_now


@dataclass(frozen=True)
class PatternRun:
    run_id: str
    model: str
    dim: int
    k: int
    segments: int
    sizes: list[int]
    silhouette: dict
    seconds: float


def _map_xy(vecs, seed: int, sample: int = 20_000, chunk: int = 65_536) -> np.ndarray:
    """2-D PCA coordinates of every row, the axes fitted on a seeded sample."""
    from sklearn.decomposition import PCA
    n = len(vecs)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    fit = np.asarray(vecs[rows], dtype=np.float32)
    out = np.zeros((n, 2), np.float32)
    if n < 3:
        return out
    pca = PCA(n_components=2, random_state=seed).fit(fit)
    for lo in range(0, n, chunk):
        out[lo:lo + chunk] = pca.transform(np.asarray(vecs[lo:lo + chunk], np.float32))
    return out


def compute(store: Store, k: int | None = None, seed: int = 0,
            space: segment_index.Space | None = None) -> PatternRun:
    """Cluster the moments of `space` (default: the largest) into k patterns (chosen by the
    silhouette when None), store them with a new run id and return what was stored."""
    t0 = time.perf_counter()
    if space is None:
        found = segment_index.spaces(store)
        if not found:
            raise ValueError(f"{store.path}: no stored segment has an embedding yet")
        space = found[0]
    ix = segment_index.for_search(store, space)
    keys, vecs = ix.saved_rows()
    if len(keys) < 2:
        raise ValueError(f"{store.path}: {len(keys)} moment(s) with embeddings; patterns need "
                         "at least 2")
    if k is not None and not 1 <= k <= len(keys):
        raise ValueError(f"k must be between 1 and {len(keys)}, not {k}")
    found = patterns.find_patterns(vecs, k, seed=seed)
    xy = _map_xy(vecs, seed)
    rank = np.zeros(len(keys), np.int32)
    for rows in found.representatives:
        rank[rows] = np.arange(1, len(rows) + 1)
    run_id = f"p{utc_now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    rows = pd.DataFrame({"k": np.asarray(keys, np.uint64), "pattern": found.labels,
                         "similarity": found.similarity, "representative": rank,
                         "x": xy[:, 0], "y": xy[:, 1]})
    now = utc_now()
    with store.write() as con:
        con.execute("DELETE FROM segment_patterns")
        con.execute("DELETE FROM patterns")
        con.executemany(
            "INSERT INTO patterns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[run_id, p, space.model, space.dim, found.k, int(n), seed,
              json.dumps({str(a): b for a, b in found.scores.items()}), now]
             for p, n in enumerate(found.sizes)])
        con.register("pattern_rows", rows)
        try:
            # Segment ids come from the store by key: a row erased meanwhile simply has none.
            con.execute(
                "INSERT INTO segment_patterns SELECT ?, g.segment_id, g.session_id, p.pattern, "
                "p.similarity, nullif(p.representative, 0), p.x, p.y FROM pattern_rows p "
                f"JOIN segments g ON {segment_index.KEY} = p.k", [run_id])
        finally:
            con.unregister("pattern_rows")
    return PatternRun(run_id, space.model, space.dim, found.k, len(keys),
                      [int(n) for n in found.sizes], found.scores, time.perf_counter() - t0)
