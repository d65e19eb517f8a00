"""Exact cosine top-k over an embedding matrix, with filters on segment metadata: the brute-force
reference that the ANN index (core.index.vector_index, core.index.similar) is measured against in bench/.

The index holds every embedding L2-normalised in one float32 matrix, so a query is a single
matrix-vector product followed by a partial sort; filters are boolean masks over aligned arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Metadata columns the index keeps next to the matrix (one row per segment, same order).
META_COLUMNS = ["segment_id", "session_id", "speaker", "label", "confidence", "start_s", "end_s",
                "team", "when"]


@dataclass(frozen=True)
class Index:
    matrix: np.ndarray  # (N, D) float32, rows of unit length (zero rows stay zero)
    meta: pd.DataFrame  # META_COLUMNS, aligned with matrix rows
    dropped: int = 0  # segments left out because their embedding had another dimension

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1]) if self.matrix.ndim == 2 else 0

    def row_of(self, segment_id: str) -> int | None:
        hits = np.flatnonzero(self.meta.segment_id.to_numpy() == segment_id)
        return int(hits[0]) if hits.size else None


class _Rows:
    """Some rows of a shared matrix, indexed as if they were the whole matrix (no copy)."""

    def __init__(self, matrix: np.ndarray, rows: np.ndarray):
        self._m, self._rows = matrix, rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        return self._m[self._rows[i]]


@dataclass(frozen=True)
class View:
    """The part of a shared index one viewer may search: the rows of the sessions in their
    scope. Rows of other sessions do not exist for it — not as hits, not as a query, not in
    the filters' choices, not on the map — and nothing is copied but the metadata."""
    index: Index
    rows: np.ndarray  # positions in index, ascending
    meta: pd.DataFrame  # index.meta at those rows, renumbered from 0
    dropped: int = 0

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return self.index.dim

    @property
    def vectors(self) -> _Rows:
        return _Rows(self.index.matrix, self.rows)

    def row_of(self, segment_id: str) -> int | None:
        hits = np.flatnonzero(self.meta.segment_id.to_numpy() == segment_id)
        return int(hits[0]) if hits.size else None


def view(index: Index, sessions) -> View:
    """What a viewer who may see `sessions` (ids; None: all of them) can search in `index`."""
    if sessions is None:
        return View(index, np.arange(index.size), index.meta, index.dropped)
    keep = index.meta.session_id.isin(set(sessions)).to_numpy()
    rows = np.flatnonzero(keep)
    return View(index, rows, index.meta.iloc[rows].reset_index(drop=True), 0)


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in place when already float32; all-zero rows stay zero."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim == 1:
        m = m[None, :]
    if not m.flags.writeable:  # e.g. a zero-copy view of an Arrow buffer
        m = m.copy()
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    np.divide(m, norms, out=m, where=norms > 0)
    return m


def build_index(matrix: np.ndarray, meta: pd.DataFrame, dropped: int = 0) -> Index:
    if len(meta) != len(matrix):
        raise ValueError(f"{len(meta)} metadata rows for {len(matrix)} embeddings")
    meta = meta.reset_index(drop=True).copy()
    if "when" in meta:
        meta["when"] = pd.to_datetime(meta["when"])
    return Index(normalise(matrix), meta, dropped)


def mask_for(index: Index | View, speakers=None, labels=None, teams=None, since=None, until=None,
             exclude_session: str | None = None, exclude_segment: str | None = None) -> np.ndarray:
    """Rows allowed by the filters; each filter is optional (None or empty = no restriction).

    since/until compare the session date (until exclusive).
    """
    m = index.meta
    keep = np.ones(len(m), dtype=bool)
    for col, allowed in (("speaker", speakers), ("label", labels), ("team", teams)):
        if allowed:
            keep &= m[col].isin(list(allowed)).to_numpy()
    if since is not None:
        keep &= (m["when"] >= pd.Timestamp(since)).to_numpy()
    if until is not None:
        keep &= (m["when"] < pd.Timestamp(until)).to_numpy()
    if exclude_session:
        keep &= (m["session_id"] != exclude_session).to_numpy()
    if exclude_segment:
        keep &= (m["segment_id"] != exclude_segment).to_numpy()
    return keep


def top_k(index: Index | View, query: np.ndarray, k: int = 10,
          mask: np.ndarray | None = None) -> pd.DataFrame:
    """The k rows most similar to `query` by cosine, best first, with a `similarity` column.
    On a View, only its rows compete (the mask, if any, is over the View's rows)."""
    q = normalise(np.array(query, dtype=np.float32, copy=True)).ravel()
    if index.size == 0 or k <= 0:
        return index.meta.iloc[0:0].assign(similarity=np.zeros(0, np.float32))
    if q.size != index.dim:
        raise ValueError(f"the query has {q.size} dimensions but the stored embeddings have "
                         f"{index.dim}; it must come from the same model")
    if isinstance(index, View):  # one pass over the shared matrix, then only the visible rows
        sims = (index.index.matrix @ q)[index.rows]
    else:
        sims = index.matrix @ q
    if mask is not None:
        sims = np.where(mask, sims, -np.inf)
        n = int(mask.sum())
    else:
        n = index.size
    k = min(k, n)
    if k == 0:
        return index.meta.iloc[0:0].assign(similarity=np.zeros(0, np.float32))
    part = np.argpartition(-sims, k - 1)[:k]
    best = part[np.argsort(-sims[part], kind="stable")]
    out = index.meta.iloc[best].copy()
    out["similarity"] = sims[best]
    return out.reset_index(drop=True)


def pca_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, the 2 principal axes) of the rows of `x`: what places any other vector on the
    same map (`(v - mean) @ axes.T`)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        d = x.shape[1] if x.ndim == 2 else 0
        return np.zeros(d), np.zeros((2, d))
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:2]
    if len(axes) < 2:
        axes = np.pad(axes, ((0, 2 - len(axes)), (0, 0)))
    return mean, axes


def pca_2d(matrix, n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA coordinates of a seeded random sample of at most n rows: (row indices, (n, 2))."""
    rows = np.arange(len(matrix))
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    x = np.asarray(matrix[rows], dtype=np.float64)
    if len(x) == 0:
        return rows, np.zeros((0, 2))
    x = x - x.mean(axis=0)
    # Thin SVD of the sample: its right singular vectors are the principal axes.
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return rows, coords


def updated(index: Index, stamps_before: dict, stamps_now: dict, fetch,
            max_share: float = 0.3) -> Index | None:
    """The index brought up to date without reading every embedding again.

    stamps map session_id → when it was (re)ingested. Rows of sessions that are gone or were
    re-ingested are dropped; those sessions' segments come from `fetch(session_ids, dim)`
    (→ meta, matrix, dropped), as Reader.embedding_matrix gives them. None when so much changed
    that reading everything is as cheap.
    """
    changed = [s for s, t in stamps_now.items() if stamps_before.get(s) != t]
    gone = set(stamps_before) - set(stamps_now)
    if not changed and not gone:
        return index
    if len(changed) + len(gone) > max_share * max(len(stamps_now), 1) or index.dim == 0:
        return None
    keep = ~index.meta.session_id.isin(set(changed) | gone).to_numpy()
    if changed:
        meta, matrix, dropped = fetch(changed, index.dim)
    else:
        meta, matrix, dropped = index.meta.iloc[0:0], np.zeros((0, index.dim), np.float32), 0
    fresh = build_index(matrix.reshape(-1, index.dim), meta)
    # One copy of the big matrix, straight into its new place (memory bandwidth is the cost).
    k = int(keep.sum())
    out = np.empty((k + fresh.size, index.dim), np.float32)
    # Kept rows are copied as runs (a session's rows are contiguous): block copies, not a
    # row-by-row gather.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.view(np.int8), [0]])))
    pos = 0
    for a, b in zip(edges[::2], edges[1::2]):
        out[pos:pos + b - a] = index.matrix[a:b]
        pos += b - a
    out[k:] = fresh.matrix
    old = index.meta if k == index.size else index.meta[keep]
    return Index(out, pd.concat([old, fresh.meta], ignore_index=True), index.dropped + dropped)
