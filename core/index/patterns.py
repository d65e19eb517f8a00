"""Recurring patterns among moments: clusters of segment embeddings, and what each one holds.

Pure functions, no database. `find_patterns` fits spherical k-means (scikit-learn's
MiniBatchKMeans on L2-normalised rows after a PCA, rows re-normalised) on a seeded sample, then
assigns every row in chunks, so 1M × 1024 embeddings — e.g. the float16 matrix beside the ANN
index, memory-mapped — are clustered without holding a float32 copy. k is given, or chosen
among a few candidates by the silhouette (cosine) on a subsample: the simplest criterion that
rewards patterns that are both tight and apart. Patterns are numbered by size, largest first;
representatives are the rows closest to their pattern's centroid.

The summaries take the labels plus a metadata frame aligned with them (segment_id, session_id,
speaker, label, team, agent_id, customer_id, when, start_s, end_s, confidence) and say, per
pattern: size, label mix, which speakers/teams/people it occurs in, and its weekly frequency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.base.labels import LABELS

K_CANDIDATES = (4, 6, 8, 10, 12, 16, 20, 24, 32)
META_COLUMNS = ["segment_id", "session_id", "speaker", "label", "team", "agent_id",
                "customer_id", "when", "start_s", "end_s", "confidence"]


@dataclass(frozen=True)
class Patterns:
    labels: np.ndarray           # (n,) int32: each row's pattern, 0 = the largest
    similarity: np.ndarray       # (n,) float32: cosine of each row to its pattern's centroid
    centroids: np.ndarray        # (k, dim) float32 unit vectors in the embedding space
    sizes: np.ndarray            # (k,) rows per pattern
    representatives: list        # per pattern: row indices closest to its centroid, best first
    k: int
    scores: dict                 # k tried → silhouette (empty when k was given)
    seed: int


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


class _Space:
    """PCA of normalised rows, then normalised again: k-means there is spherical k-means."""

    def __init__(self, sample: np.ndarray, n_components: int, seed: int):
        from sklearn.decomposition import PCA
        self.pca = None
        if sample.shape[1] > n_components and sample.shape[0] > n_components:
            self.pca = PCA(n_components=n_components, random_state=seed).fit(sample)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _unit(x)
        return x if self.pca is None else _unit(self.pca.transform(x))


def _kmeans(z: np.ndarray, k: int, seed: int):
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits
    # One thread: mini-batches are small, and OpenMP workers spinning on a busy 2-core machine
    # made fits ~5x slower than a single thread.
    with threadpool_limits(limits=1, user_api="openmp"):
        return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096,
                               max_iter=200, reassignment_ratio=0.0).fit(z)


def choose_k(z: np.ndarray, candidates=K_CANDIDATES, seed: int = 0,
             subsample: int = 2000) -> tuple[int, dict]:
    """The candidate k with the best cosine silhouette on a seeded subsample (ties: smaller k)."""
    from sklearn.metrics import silhouette_score
    ks = [k for k in candidates if 2 <= k <= max(2, len(z) // 10)]
    if not ks:
        return max(1, min(len(z), 2)), {}
    rng = np.random.default_rng(seed)
    sub = rng.choice(len(z), min(subsample, len(z)), replace=False)
    scores = {}
    for k in ks:
        labels = _kmeans(z, k, seed).predict(z[sub])
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(z[sub], labels, metric="cosine"))
    if not scores:
        return ks[0], {}
    best = max(scores.values())
    return min(k for k, s in scores.items() if s >= best - 1e-9), scores


def find_patterns(vectors, k: int | None = None, *, seed: int = 0, sample_size: int = 50_000,
                  n_components: int = 64, n_representatives: int = 5, chunk: int = 65_536,
                  candidates=K_CANDIDATES) -> Patterns:
    """Cluster rows of `vectors` ((n, dim) array or memmap, any float dtype) into patterns.

    Fits on at most `sample_size` seeded rows, assigns all rows chunk by chunk. Deterministic for
    a seed. Zero rows fall into whichever pattern is nearest to the origin's projection.
    """
    n = len(vectors)
    if n == 0:
        raise ValueError("no embeddings to cluster")
    if np.ndim(vectors) != 2:
        raise ValueError(f"embeddings must be a 2-d matrix, not shape {np.shape(vectors)}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(sample_size, n), replace=False))
    sample = np.asarray(vectors[rows], dtype=np.float32)
    if not np.isfinite(sample).all():
        raise ValueError("embeddings contain NaN or infinite values")
    sample = _unit(sample)
    space = _Space(sample, n_components, seed)
    z = space(sample)
    scores: dict = {}
    if k is None:
        k, scores = choose_k(z, candidates, seed)
    if not 1 <= k <= len(z):
        raise ValueError(f"k={k} patterns cannot be fitted on {len(z)} rows")
    model = _kmeans(z, k, seed)

    labels = np.empty(n, np.int32)
    sims = np.empty(n, np.float32)
    sums = np.zeros((k, np.shape(vectors)[1]), np.float64)
    centers = _unit(model.cluster_centers_)
    for lo in range(0, n, chunk):
        x = _unit(np.asarray(vectors[lo:lo + chunk], dtype=np.float32))
        zc = space(x)
        lab = np.argmax(zc @ centers.T, axis=1).astype(np.int32)
        labels[lo:lo + chunk] = lab
        order = np.argsort(lab, kind="stable")
        present, starts = np.unique(lab[order], return_index=True)
        sums[present] += np.add.reduceat(x[order], starts, axis=0)
    centroids = _unit(sums)
    # Similarity in the embedding space, to the centroid of each row's own pattern.
    for lo in range(0, n, chunk):
        x = _unit(np.asarray(vectors[lo:lo + chunk], dtype=np.float32))
        sims[lo:lo + chunk] = np.einsum("ij,ij->i", x, centroids[labels[lo:lo + chunk]])

    # Number patterns by size (largest first; ties by old id) so output reads naturally.
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    remap = np.empty(k, np.int32)
    remap[order] = np.arange(k, dtype=np.int32)
    labels = remap[labels]
    centroids, sizes = centroids[order], sizes[order]
    by = np.lexsort((np.arange(n), -sims, labels))  # by pattern, then closest first
    starts = np.searchsorted(labels[by], np.arange(k))
    reps = [by[s:s + min(n_representatives, int(sz))] for s, sz in zip(starts, sizes)]
    return Patterns(labels, sims, centroids.astype(np.float32), sizes, reps, int(k), scores,
                    seed)


# ---- summaries ----------------------------------------------------------------------------

def _frame(labels: np.ndarray, meta: pd.DataFrame, need: list[str]) -> pd.DataFrame:
    labels = np.asarray(labels)
    if len(labels) != len(meta):
        raise ValueError(f"{len(labels)} pattern labels for {len(meta)} metadata rows")
    missing = [c for c in need if c not in meta.columns]
    if missing:
        raise ValueError(f"segment metadata lacks column(s) {', '.join(missing)}")
    df = meta[need].reset_index(drop=True).copy()
    df["pattern"] = labels.astype(int)
    return df


def label_mix(labels, meta: pd.DataFrame) -> pd.DataFrame:
    """Share of each emotion label within each pattern: rows = pattern, columns = labels."""
    df = _frame(labels, meta, ["label"])
    mix = pd.crosstab(df["pattern"], df["label"], normalize="index")
    cols = [c for c in LABELS if c in mix.columns] + [c for c in mix.columns if c not in LABELS]
    return mix[cols]


def occurrence(labels, meta: pd.DataFrame, by: str, top: int = 5) -> pd.DataFrame:
    """Per pattern, the `top` most frequent values of `by` (speaker, team, agent_id,
    customer_id, session_id): pattern, value, count, share of the pattern. Missing = "(none)"."""
    df = _frame(labels, meta, [by])
    df[by] = df[by].fillna("(none)").astype(str)
    counts = df.groupby(["pattern", by]).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby("pattern")["count"].transform("sum")
    counts = counts.sort_values(["pattern", "count", by], ascending=[True, False, True])
    return counts.groupby("pattern").head(top).rename(columns={by: "value"}).reset_index(
        drop=True)


def weekly(labels, meta: pd.DataFrame) -> pd.DataFrame:
    """Week-by-week frequency: pattern, week (the Monday), count, and share of that week's
    moments (so a busy week does not look like a rising pattern). Every pattern has a row for
    every week between the first and last, zero-filled."""
    df = _frame(labels, meta, ["when"])
    when = pd.to_datetime(df["when"])
    if getattr(when.dt, "tz", None) is not None:
        when = when.dt.tz_localize(None)
    df["week"] = when.dt.to_period("W-SUN").dt.start_time
    df = df.dropna(subset=["week"])
    if df.empty:
        return pd.DataFrame(columns=["pattern", "week", "count", "share"])
    weeks = pd.date_range(df["week"].min(), df["week"].max(), freq="7D")
    pats = np.sort(df["pattern"].unique())
    grid = pd.MultiIndex.from_product([pats, weeks], names=["pattern", "week"])
    counts = df.groupby(["pattern", "week"]).size().reindex(grid, fill_value=0)
    out = counts.rename("count").reset_index()
    totals = df.groupby("week").size().reindex(weeks, fill_value=0)
    out["share"] = out["count"] / out["week"].map(totals).where(lambda t: t > 0, 1)
    return out


def summarise(labels, meta: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """One row per pattern: size, share, dominant label and its share, label mix, the speakers,
    teams, agents and customers it occurs in (top values with counts), sessions touched, first
    and last seen, mean confidence and mean duration."""
    df = _frame(labels, meta, META_COLUMNS[1:])  # segment_id is not needed here
    df["duration_s"] = df["end_s"] - df["start_s"]
    mix = label_mix(labels, meta)
    g = df.groupby("pattern")
    out = pd.DataFrame({
        "size": g.size(),
        "sessions": g["session_id"].nunique(),
        "first_seen": g["when"].min(),
        "last_seen": g["when"].max(),
        "mean_confidence": g["confidence"].mean(),
        "mean_duration_s": g["duration_s"].mean(),
    })
    out.insert(1, "share", out["size"] / len(df))
    out["top_label"] = mix.idxmax(axis=1)
    out["top_label_share"] = mix.max(axis=1)
    out["label_mix"] = [{c: float(v) for c, v in row.items() if v > 0}
                        for _, row in mix.iterrows()]
    for col, name in (("speaker", "speakers"), ("team", "teams"), ("agent_id", "agents"),
                      ("customer_id", "customers")):
        occ = occurrence(labels, meta, col, top)
        out[name] = [dict(zip(occ.loc[occ.pattern == p, "value"],
                              occ.loc[occ.pattern == p, "count"].astype(int)))
                     for p in out.index]
    out["distinct_agents"] = g["agent_id"].nunique()
    out["distinct_customers"] = g["customer_id"].nunique()
    return out.rename_axis("pattern").reset_index()


def representatives(patterns: Patterns, meta: pd.DataFrame) -> pd.DataFrame:
    """The representative moments of each pattern as metadata rows: pattern, rank (1 = closest
    to the centroid), similarity, then the metadata columns."""
    if len(patterns.labels) != len(meta):
        raise ValueError(f"{len(patterns.labels)} pattern labels for {len(meta)} metadata rows")
    parts = []
    for p, rows in enumerate(patterns.representatives):
        part = meta.iloc[rows].reset_index(drop=True).copy()
        part.insert(0, "similarity", patterns.similarity[rows])
        part.insert(0, "rank", np.arange(1, len(rows) + 1))
        part.insert(0, "pattern", p)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else meta.iloc[0:0].copy()
