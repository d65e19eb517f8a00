"""Searching an ANN index (core.index.vector_index): the base's HNSW graph and its deltas together.

Why usearch: both usearch and faiss-cpu were tried on this machine (50k × 1024, cosine,
M=16): build and query speed and recall were alike, but usearch removes keys natively, takes our
64-bit keys as they are, and views its whole file memory-mapped, graph included. Its Python
binding has no filtered search, so filters are handled here.

Why a float16 matrix next to the int8 graph: usearch hands back stored vectors one small array
per key (~8 µs each), too slow for exact search over a selective filter (10k rows), and
int8 distances cost ~5 points of recall@10. The key-sorted float16 matrix gives exact scores in
bulk: ANN candidates are re-ranked with it, and selective filters are answered exactly from it.

Deltas (rows written since the base was built, at most `Params.compact_rows` before a
compaction folds them into a new base) have no graph: they are scored exactly and merged with
the graph's hits, so they never cost recall. Base rows that a later generation removed or
replaced (tombstones) are dropped from the graph's candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    # Delta rows (and tombstones) past which a compaction builds a new base: exact scoring of
    # 20k × 1024 float16 rows takes ~5 ms here, well inside the search budget.
    compact_rows: int = 20_000


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
        return member(self.keys, keys)


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


def member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of `keys` are in the sorted array `sorted_keys`."""
    keys = np.asarray(keys, dtype=np.uint64)
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos[pos == sorted_keys.size] = 0
    return sorted_keys[pos] == keys


def empty_hits() -> Hits:
    return Hits(np.zeros(0, np.uint64), np.zeros(0, np.float32), "exact")


def _best(parts: list[Hits], k: int, method: str) -> Hits:
    keys = np.concatenate([h.keys for h in parts])
    sims = np.concatenate([h.similarity for h in parts])
    keys, first = np.unique(keys, return_index=True)  # a row met twice has one score
    sims = sims[first]
    top = np.argsort(-sims, kind="stable")[:k]
    return Hits(keys[top], sims[top], method)


class Searching:
    """search() for VectorIndex: expects _graph, _fetch, _new_rows, _pending, keys(), __len__,
    params, dim, _mutex and `_graph_holds_new` (True while building: new rows are in the
    graph too; False for deltas, which are searched exactly here)."""

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
            return empty_hits()
        if allowed is None:
            return self._ann(q, k, None, bar)
        allowed = Allowed.of(allowed)
        if len(allowed) <= self.params.exact_limit:
            return self._exact(q, k, allowed.keys, bar)
        return self._ann(q, k, allowed, bar)

    def _ann(self, q: np.ndarray, k: int, allowed: Allowed | None, bar: Allowed) -> Hits:
        method = "ann" if allowed is None else "ann-filtered"
        n = len(self._graph)
        extra = []
        if self._pending.size and not self._graph_holds_new:  # the deltas, scored exactly
            if allowed is None:
                extra = [self._exact_new_rows(q, k, bar)]
            else:
                extra = [self._exact(q, k, self._pending[allowed.contains(self._pending)], bar)]
        if n == 0:
            return _best(extra or [empty_hits()], k, "exact")
        share = 1.0 if allowed is None else len(allowed) / max(len(self), 1)
        want = (k * self.params.rerank + len(bar)) / max(share, 1e-9)
        count = min(n, max(k, int(np.ceil(want))))
        while True:
            with self._mutex:
                cand = np.asarray(self._graph.search(q, count).keys, dtype=np.uint64)
            ok = ~bar.contains(cand)
            if allowed is not None:
                ok &= allowed.contains(cand)
            # With k admitted candidates, the best k of them are the best k admitted rows among
            # all that the graph ranked above its last candidate.
            hits = _best([self._score(q, k, cand[ok], method)] + extra, k, method)
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
        parts = [empty_hits()]
        step = 32768
        for lo in range(0, pool.size, step):
            parts.append(self._score(q, k, pool[lo:lo + step], "exact"))
        return _best(parts, k, "exact")

    def _exact_new_rows(self, q: np.ndarray, k: int, bar: Allowed) -> Hits:
        """Every row outside the base scored exactly, straight from the rows held in memory:
        fetching them by key cost a lookup in the base for each, on every query."""
        keys, vecs = self._new_rows()
        if keys.size != self._pending.size:  # a key twice in the chunks: by key, as a lookup
            return self._exact(q, k, self._pending, bar)
        if len(bar):
            keep = ~bar.contains(keys)
            keys, vecs = keys[keep], vecs[keep]
        return self._scored(q, k, keys, vecs, "exact")

    def _score(self, q: np.ndarray, k: int, cand: np.ndarray, method: str) -> Hits:
        found, vecs = self._fetch(cand)
        return self._scored(q, k, cand[found], vecs, method)

    def _scored(self, q: np.ndarray, k: int, cand: np.ndarray, vecs: np.ndarray,
                method: str) -> Hits:
        from usearch.index import search as brute_force
        if cand.size == 0:
            return Hits(cand, np.zeros(0, np.float32), method)
        # SimSIMD's float16 kernels: numpy would first convert to float32, 5x slower.
        m = brute_force(vecs, q, min(k, cand.size), "cos", exact=True,
                        threads=1 if cand.size < 100_000 else 0)
        sims = np.clip(1.0 - np.asarray(m.distances, np.float32), -1.0, 1.0)
        return Hits(cand[np.asarray(m.keys, np.int64)], sims, method)
