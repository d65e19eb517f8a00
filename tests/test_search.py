"""Cosine top-k with filters over the embedding index, and the Store's Arrow read of it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.index import search
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.storage.store import Store


def make_index(n=500, d=32, seed=0) -> search.Index:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({
        "segment_id": [f"s{i // 10:03d}-c0-{i % 10:05d}" for i in range(n)],
        "session_id": [f"s{i // 10:03d}" for i in range(n)],
        "speaker": rng.choice(["agent", "customer", "speaker"], n),
        "label": rng.choice(["angry", "happy", "neutral", "sad"], n),
        "confidence": rng.random(n), "start_s": np.arange(n) % 10 * 2.0,
        "end_s": np.arange(n) % 10 * 2.0 + 1.5,
        "team": rng.choice(["billing", "support"], n),
        "when": pd.Timestamp("2026-11-01") + pd.to_timedelta(np.arange(n) // 10, unit="D")})
    return search.build_index(rng.normal(size=(n, d)).astype(np.float32) * 5, meta)


def test_normalise_gives_unit_rows_and_keeps_zero_rows():
    m = search.normalise(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32))
    assert np.allclose(m[0], [0.6, 0.8])
    assert np.all(m[1] == 0)


def test_top_k_matches_brute_force_cosine():
    idx = make_index()
    q = np.random.default_rng(1).normal(size=32)
    hits = search.top_k(idx, q, k=10)
    raw = idx.matrix @ (q / np.linalg.norm(q))
    assert hits.segment_id.tolist() == idx.meta.segment_id.iloc[np.argsort(-raw)[:10]].tolist()
    assert np.all(np.diff(hits.similarity.to_numpy()) <= 1e-7)
    assert hits.similarity.iloc[0] == pytest.approx(raw.max(), abs=1e-5)


def test_a_stored_vector_finds_itself_first():
    idx = make_index()
    hits = search.top_k(idx, idx.matrix[123] * 7.0, k=3)
    assert hits.segment_id.iloc[0] == idx.meta.segment_id.iloc[123]
    assert hits.similarity.iloc[0] == pytest.approx(1.0, abs=1e-5)


def test_filters_restrict_every_hit():
    idx = make_index()
    q = idx.matrix[5]
    mask = search.mask_for(idx, speakers=["customer"], labels=["angry", "sad"], teams=["support"],
                           since="2026-11-10", until="2026-11-20", exclude_session="s100")
    hits = search.top_k(idx, q, k=50, mask=mask)
    assert 0 < len(hits) == min(50, int(mask.sum()))
    assert set(hits.speaker) == {"customer"}
    assert set(hits.label) <= {"angry", "sad"}
    assert set(hits.team) == {"support"}
    assert hits["when"].min() >= pd.Timestamp("2026-11-10")
    assert hits["when"].max() < pd.Timestamp("2026-11-20")


def test_excluding_the_query_session_and_segment():
    idx = make_index()
    sid = idx.meta.session_id.iloc[42]
    hits = search.top_k(idx, idx.matrix[42], k=20,
                        mask=search.mask_for(idx, exclude_session=sid))
    assert sid not in set(hits.session_id)
    hits = search.top_k(idx, idx.matrix[42], k=5,
                        mask=search.mask_for(idx, exclude_segment=idx.meta.segment_id.iloc[42]))
    assert idx.meta.segment_id.iloc[42] not in set(hits.segment_id)


def test_empty_mask_and_wrong_dimension():
    idx = make_index()
    assert search.top_k(idx, idx.matrix[0], k=5, mask=np.zeros(idx.size, bool)).empty
    with pytest.raises(ValueError, match="same model"):
        search.top_k(idx, np.ones(7), k=5)


def test_pca_2d_samples_and_separates_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16)) + 10
    b = rng.normal(size=(200, 16)) - 10
    rows, xy = search.pca_2d(np.vstack([a, b]), n=100)
    assert rows.shape == (100,) and xy.shape == (100, 2)
    first = xy[rows < 200, 0]
    second = xy[rows >= 200, 0]
    assert first.size and second.size
    assert (first.min() > second.max()) or (first.max() < second.min())


def test_store_embedding_matrix_matches_the_rows(ingested_db):
    store = Store(ingested_db)
    meta, matrix, dropped = Reader(store, operator()).embedding_matrix()
    rows = store.query("SELECT segment_id, embedding FROM segments")
    ids, emb = rows.segment_id.tolist(), np.stack(rows.embedding.to_numpy())
    assert dropped == 0
    assert len(meta) == len(ids) == matrix.shape[0] > 0
    order = {sid: i for i, sid in enumerate(ids)}
    for k in (0, len(meta) // 2, len(meta) - 1):
        assert np.allclose(matrix[k], emb[order[meta.segment_id.iloc[k]]])
    assert set(meta.columns) >= set(search.META_COLUMNS)
    idx = search.build_index(matrix, meta)
    hits = search.top_k(idx, matrix[0], k=1)
    assert hits.segment_id.iloc[0] == meta.segment_id.iloc[0]


def test_updated_index_equals_a_full_rebuild(ingested_db, tmp_path):
    import shutil
    db = tmp_path / "s.duckdb"
    shutil.copy(ingested_db, db)
    store = Store(db)
    reader = Reader(store, operator())
    stamps = reader.ingest_stamps

    def full():
        meta, matrix, dropped = reader.embedding_matrix()
        return search.build_index(matrix, meta, dropped)

    def fetch(ids, dim):
        return reader.embedding_matrix(SessionFilter(session_ids=tuple(ids)), dim)

    index, before = full(), stamps()
    assert search.updated(index, before, before, fetch) is index  # nothing changed
    first, second = sorted(before)
    with store.write() as con:  # a copy of one session arrives; the other is removed
        con.execute("INSERT INTO sessions SELECT * REPLACE ('snew' AS session_id, "
                    "ingested_at + INTERVAL 1 DAY AS ingested_at) FROM sessions "
                    "WHERE session_id = ?", [first])
        con.execute("INSERT INTO segments SELECT * REPLACE ('snew' AS session_id, "
                    "replace(segment_id, session_id, 'snew') AS segment_id) FROM segments "
                    "WHERE session_id = ?", [first])
        con.execute("DELETE FROM segments WHERE session_id = ?", [second])
        con.execute("DELETE FROM sessions WHERE session_id = ?", [second])
    now = stamps()
    inc = search.updated(index, before, now, fetch, max_share=1.0)
    ref = full()
    assert inc is not None and inc.size == ref.size
    assert "snew" in set(inc.meta.session_id) and second not in set(inc.meta.session_id)
    order = {s: i for i, s in enumerate(ref.meta.segment_id)}
    rows = [order[s] for s in inc.meta.segment_id]
    assert np.allclose(inc.matrix, ref.matrix[rows], atol=1e-6)
    # Too much changed: the caller reads everything instead.
    assert search.updated(index, before, now, fetch, max_share=0.3) is None
