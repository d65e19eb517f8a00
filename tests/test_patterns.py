"""Patterns: spherical k-means over moments, deterministic, planted clusters found, summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.index import patterns as pt


def planted(n=3000, d=48, k=6, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((k, d))
    truth = rng.integers(0, k, n)
    # Scaled rows: clustering must work on directions, not lengths.
    scale = rng.uniform(0.5, 20.0, (n, 1))
    return ((cent[truth] + rng.standard_normal((n, d)) * noise) * scale).astype(np.float32), truth


def test_planted_clusters_are_recovered_and_k_is_chosen():
    from sklearn.metrics import adjusted_rand_score
    X, truth = planted()
    p = pt.find_patterns(X, seed=3, candidates=(3, 6, 9, 12), chunk=700, n_components=16)
    assert p.k == 6 and max(p.scores, key=p.scores.get) == 6
    assert adjusted_rand_score(truth, p.labels) >= 0.98
    assert p.sizes.tolist() == np.bincount(p.labels).tolist()
    assert np.all(np.diff(p.sizes) <= 0)  # numbered largest first
    np.testing.assert_allclose(np.linalg.norm(p.centroids, axis=1), 1.0, atol=1e-5)
    # Representatives: members of their pattern, the closest to its centroid, best first.
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    for j, reps in enumerate(p.representatives):
        assert len(reps) == 5 and (p.labels[reps] == j).all()
        sims = unit[reps] @ p.centroids[j]
        np.testing.assert_allclose(sims, p.similarity[reps], atol=1e-5)
        assert np.all(np.diff(sims) <= 1e-6)
        members = np.flatnonzero(p.labels == j)
        assert sims[0] == pytest.approx((unit[members] @ p.centroids[j]).max(), abs=1e-5)


def test_same_seed_same_patterns_and_sampling_still_assigns_everything():
    X, truth = planted(n=2500, seed=1)
    a = pt.find_patterns(X, k=6, seed=7, sample_size=800, chunk=512)
    b = pt.find_patterns(X, k=6, seed=7, sample_size=800, chunk=999)
    assert np.array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.centroids, b.centroids, atol=1e-6)
    assert [r.tolist() for r in a.representatives] == [r.tolist() for r in b.representatives]
    assert len(a.labels) == 2500 and a.scores == {}
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, a.labels) >= 0.98  # fitted on 800, right for all 2500


def test_float16_memmap_input(tmp_path):
    X, truth = planted(n=1200, seed=2)
    path = tmp_path / "vecs.npy"
    np.save(path, (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float16))
    p = pt.find_patterns(np.load(path, mmap_mode="r"), k=6, seed=0)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, p.labels) >= 0.98


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no embeddings"):
        pt.find_patterns(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="k=50"):
        pt.find_patterns(np.random.default_rng(0).standard_normal((20, 8)), k=50)
    with pytest.raises(ValueError, match="NaN"):
        pt.find_patterns(np.full((30, 8), np.nan), k=2)


def meta() -> pd.DataFrame:
    """Eight moments by hand, over two weeks (Mon 2026-11-02 and Mon 2026-11-09)."""
    return pd.DataFrame({
        "segment_id": [f"s{i}" for i in range(8)],
        "session_id": ["a", "a", "b", "b", "c", "c", "d", "d"],
        "speaker": ["customer", "customer", "agent", "customer", "customer", "agent",
                    "speaker", "speaker"],
        "label": ["angry", "angry", "neutral", "sad", "angry", "neutral", "sad", "happy"],
        "team": ["billing", "billing", "support", "support", "billing", "billing", None, None],
        "agent_id": ["a-1", "a-1", "a-2", "a-2", "a-1", "a-1", None, None],
        "customer_id": ["c-1", "c-1", "c-2", "c-2", "c-3", "c-3", "p-9", "p-9"],
        "when": pd.to_datetime(["2026-11-02 09:00", "2026-11-02 09:00", "2026-11-04 00:00",
                                "2026-11-04 00:00", "2026-11-10 00:00", "2026-11-10 00:00",
                                "2026-11-15 23:00", "2026-11-15 23:00"]),
        "start_s": [0.0, 5.0, 0.0, 4.0, 1.0, 3.0, 0.0, 10.0],
        "end_s": [2.0, 9.0, 3.0, 5.0, 2.0, 7.0, 6.0, 12.0],
        "confidence": [0.9, 0.7, 0.6, 0.5, 0.8, 0.4, 0.3, 1.0]})


LABELS = np.array([0, 0, 1, 2, 0, 1, 2, 2])


def test_summary_of_a_hand_made_example():
    s = pt.summarise(LABELS, meta()).set_index("pattern")
    assert s["size"].tolist() == [3, 2, 3]
    assert s["share"].tolist() == pytest.approx([3 / 8, 2 / 8, 3 / 8])
    assert s.loc[0, "top_label"] == "angry" and s.loc[0, "top_label_share"] == 1.0
    assert s.loc[2, "label_mix"] == pytest.approx({"sad": 2 / 3, "happy": 1 / 3})
    assert s.loc[0, "speakers"] == {"customer": 3}
    assert s.loc[1, "teams"] == {"billing": 1, "support": 1}
    assert s.loc[2, "teams"] == {"(none)": 2, "support": 1}
    assert s.loc[0, "agents"] == {"a-1": 3}
    assert s.loc[0, "customers"] == {"c-1": 2, "c-3": 1}
    assert s.loc[2, "sessions"] == 2 and s.loc[0, "distinct_customers"] == 2
    assert s.loc[0, "first_seen"] == pd.Timestamp("2026-11-02 09:00")
    assert s.loc[0, "last_seen"] == pd.Timestamp("2026-11-10")
    assert s.loc[0, "mean_confidence"] == pytest.approx(0.8)
    assert s.loc[1, "mean_duration_s"] == pytest.approx(3.5)


def test_label_mix_and_occurrence():
    mix = pt.label_mix(LABELS, meta())
    assert list(mix.columns) == ["angry", "happy", "neutral", "sad"]  # canonical order
    assert mix.loc[1, "neutral"] == 1.0
    np.testing.assert_allclose(mix.sum(axis=1), 1.0)
    occ = pt.occurrence(LABELS, meta(), "customer_id", top=1)
    assert occ.values.tolist() == [[0, "c-1", 2, pytest.approx(2 / 3)],
                                   [1, "c-2", 1, 0.5], [2, "p-9", 2, pytest.approx(2 / 3)]]


def test_weekly_frequency_counts_and_shares():
    w = pt.weekly(LABELS, meta())
    assert sorted(w["week"].unique()) == [pd.Timestamp("2026-11-02"), pd.Timestamp("2026-11-09")]
    got = {(r.pattern, r.week.strftime("%m-%d")): (r.count, r.share) for r in w.itertuples()}
    # Week of 11-02: 4 moments (2 in pattern 0); week of 11-09 (to Sunday 11-15): 4 moments.
    assert got[(0, "11-02")] == (2, 0.5)
    assert got[(0, "11-09")] == (1, 0.25)
    assert got[(2, "11-09")] == (2, 0.5)
    assert got[(1, "11-02")] == (1, 0.25)
    assert len(w) == 3 * 2  # zero-filled grid
    assert w.groupby("week")["count"].sum().tolist() == [4, 4]


def test_representatives_frame_and_mismatched_metadata():
    X, _ = planted(n=8, d=6, k=2, seed=4)
    p = pt.find_patterns(X, k=2, seed=0, n_representatives=2)
    reps = pt.representatives(p, meta())
    assert list(reps.columns[:3]) == ["pattern", "rank", "similarity"]
    assert len(reps) == 4 and reps.groupby("pattern")["rank"].apply(list).tolist() == [[1, 2]] * 2
    for r in reps.itertuples():
        assert p.labels[int(r.segment_id[1:])] == r.pattern
    with pytest.raises(ValueError, match="7 metadata rows"):
        pt.summarise(LABELS, meta().iloc[:7])
    with pytest.raises(ValueError, match="lacks column"):
        pt.summarise(LABELS, meta().drop(columns=["team"]))
