"""The ANN index beside the store: keys shared with SQL, recall, in-place changes, stale or
corrupt files refused, filtered search that stays correct."""
from __future__ import annotations

import json
import os

import duckdb
import numpy as np
import pytest

from core.index import vector_index as vx
from core.storage import vector_keys as vk

MODEL = "iic/emotion2vec_plus_large"


def clustered(n: int, d: int, clusters: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows around `clusters` centroids with a low-rank spread; also each row's cluster."""
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((clusters, d))
    basis = rng.standard_normal((clusters, 8, d)) / np.sqrt(d)
    c = rng.integers(0, clusters, n)
    x = cent[c] / np.sqrt(d) + np.einsum("nr,nrd->nd", rng.standard_normal((n, 8)) * 0.25,
                                         basis[c])
    x += rng.standard_normal((n, d)) * (0.15 / np.sqrt(d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), c


def exact(X: np.ndarray, keys: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = X @ (q / np.linalg.norm(q))
    return keys[np.argsort(-s, kind="stable")[:k]]


def assert_exact(hits, X: np.ndarray, keys: np.ndarray, q: np.ndarray, k: int) -> None:
    """Hits are the exact top k: same similarities as the true top k (the index stores float16,
    so near-ties may swap places), and each reported similarity is the hit's true one."""
    s = X @ (q / np.linalg.norm(q))
    true_top = np.sort(s)[::-1][:k]
    pos = {int(key): i for i, key in enumerate(keys)}
    got = s[[pos[int(key)] for key in hits.keys]]
    assert len(hits) == min(k, len(keys))
    np.testing.assert_allclose(got, true_top, atol=2e-3)
    np.testing.assert_allclose(hits.similarity, got, atol=2e-3)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """20,000 clustered 128-d vectors and their index, plus 200 held-out queries."""
    X, _ = clustered(20_200, 128, clusters=60, seed=1)
    ids = [f"s{i // 50:05d}-c{i % 2}-{i % 50:05d}" for i in range(20_000)]
    keys = vk.keys_for(ids)
    path = vx.index_path(tmp_path_factory.mktemp("big") / "store.duckdb", MODEL, 128)
    batches = [(keys[:12_000], X[:12_000]), (keys[12_000:], X[12_000:20_000])]
    ix = vx.build(path, MODEL, 128, batches)
    return ix, X[:20_000], keys, X[20_000:]


def small_index(tmp_path, n=2000, d=32, seed=0, params=vx.Params()):
    X, c = clustered(n, d, clusters=12, seed=seed)
    keys = vk.keys_for(f"seg-{seed}-{i}" for i in range(n))
    path = vx.index_path(tmp_path / "store.duckdb", MODEL, d)
    return vx.build(path, MODEL, d, [(keys, X)], params=params), X, keys, c


# ---- keys and fingerprints ----------------------------------------------------------------

def test_python_and_sql_compute_the_same_keys_and_fingerprint():
    rng = np.random.default_rng(3)
    ids = [f"s{rng.integers(1e12):013d}-c{i % 2}-{i:05d}" for i in range(3000)]
    ids += ["", "a", "ünïcödé-段落-🙂", "it's \"quoted\"", "x" * 500, "tab\there", "ß" * 7,
            "Zürich-Ω-c1-00003", "\U0001f600" * 3]
    con = duckdb.connect()
    con.execute("CREATE TABLE segments (segment_id VARCHAR, team VARCHAR)")
    con.executemany("INSERT INTO segments VALUES (?, ?)",
                    [(s, "billing" if i % 3 == 0 else "support") for i, s in enumerate(ids)])
    sql_keys = con.execute(f"SELECT {vk.key_sql()} FROM segments").fetchnumpy()
    sql_keys = next(iter(sql_keys.values()))
    assert sql_keys.dtype == np.uint64
    assert np.array_equal(sql_keys, vk.keys_for(ids))
    odd = "ünïcödé-段落-🙂"
    assert vk.key_of(odd) == int(sql_keys[ids.index(odd)])
    assert np.unique(sql_keys).size == len(ids)
    fp = vk.Fingerprint.from_row(con.execute(vk.fingerprint_sql("segments")).fetchone())
    assert fp == vk.Fingerprint.of(vk.keys_for(ids))
    assert fp.count == len(ids) and fp.key_sum < 2**64
    # A filter's admitted keys come straight from SQL.
    some = con.execute(f"SELECT {vk.key_sql()} FROM segments WHERE team = 'billing'").fetchall()
    assert {k for (k,) in some} == {vk.key_of(s) for i, s in enumerate(ids) if i % 3 == 0}
    empty = con.execute(vk.fingerprint_sql("(SELECT * FROM segments WHERE false)")).fetchone()
    assert vk.Fingerprint.from_row(empty) == vk.Fingerprint.of(np.zeros(0, np.uint64))


def test_fingerprint_tells_apart_sets_of_one_size():
    keys = vk.keys_for(f"s{i}" for i in range(100))
    other = keys.copy()
    other[5] = vk.key_of("s-other")
    assert vk.Fingerprint.of(keys) != vk.Fingerprint.of(other)
    assert vk.Fingerprint.of(keys) == vk.Fingerprint.of(keys[::-1])


# ---- recall -------------------------------------------------------------------------------

def test_recall_at_10_on_20k_vectors(big):
    ix, X, keys, Q = big
    assert len(ix) == 20_000 and ix.fingerprint() == vk.Fingerprint.of(keys)
    hits = [ix.search(q, 10) for q in Q]
    assert {h.method for h in hits} == {"ann"}
    rec = np.mean([len(set(h.keys) & set(exact(X, keys, q, 10))) / 10 for h, q in zip(hits, Q)])
    assert rec >= 0.95
    for h in hits[:20]:
        assert len(h) == 10 and np.all(np.diff(h.similarity) <= 1e-6)
    # Stored vectors find themselves first, at similarity ~1.
    # (The graph is built by several threads, so which few miss themselves varies by run.)
    rows = range(0, 20_000, 100)
    firsts = [ix.search(X[i] * 5.0, 3) for i in rows]
    found = [h for h, i in zip(firsts, rows) if h.keys[0] == keys[i]]
    assert len(found) >= 0.98 * len(firsts)
    assert all(h.similarity[0] == pytest.approx(1.0, abs=2e-3) for h in found)


# ---- filtered search ----------------------------------------------------------------------

def test_selective_filter_is_exact_and_returns_only_allowed(big):
    ix, X, keys, Q = big
    rng = np.random.default_rng(5)
    rows = rng.choice(len(keys), 150, replace=False)
    allowed = keys[rows]
    for q in Q[:30]:
        h = ix.search(q, 10, allowed=allowed)
        assert h.method == "exact" and len(h) == 10
        assert np.isin(h.keys, allowed).all()
        assert_exact(h, X[rows], keys[rows], q, 10)


def test_broad_filter_goes_through_the_graph_and_returns_k(big, tmp_path):
    ix, X, keys, Q = big
    ann = vx.VectorIndex.open(ix.path, MODEL, 128)
    ann.tune(exact_limit=100)  # force the oversampled-ANN path
    rows = np.flatnonzero(np.random.default_rng(6).random(len(keys)) < 0.4)
    allowed = vx.Allowed.of(keys[rows])
    rec = []
    for q in Q[:50]:
        h = ann.search(q, 10, allowed=allowed)
        assert h.method == "ann-filtered" and len(h) == 10
        assert allowed.contains(h.keys).all()
        rec.append(len(set(h.keys) & set(exact(X[rows], keys[rows], q, 10))) / 10)
    assert np.mean(rec) >= 0.95


def test_filter_far_from_the_query_falls_back_to_exact_and_still_returns_k(big):
    ix, X, keys, Q = big
    ann = vx.VectorIndex.open(ix.path, MODEL, 128)
    ann.tune(exact_limit=100, max_candidates=2048)
    q = Q[0]
    far = np.argsort(X @ q)[:6000]  # the 30 % of rows least like the query
    h = ann.search(q, 10, allowed=keys[far])
    assert len(h) == 10 and h.method == "exact"
    assert_exact(h, X[far], keys[far], q, 10)


def test_fewer_allowed_than_k_gives_all_of_them_and_unknown_keys_are_ignored(big):
    ix, X, keys, Q = big
    allowed = np.concatenate([keys[[3, 99, 1234]], vk.keys_for(["not-indexed", "nor-this"])])
    h = ix.search(Q[0], 10, allowed=allowed)
    assert sorted(h.keys.tolist()) == sorted(keys[[3, 99, 1234]].tolist())
    assert len(ix.search(Q[0], 10, allowed=np.zeros(0, np.uint64))) == 0


def test_exclude_drops_the_query_itself(big):
    ix, X, keys, Q = big
    h = ix.search(X[42], 5, exclude=keys[[42]])
    assert keys[42] not in h.keys and len(h) == 5
    h = ix.search(X[42], 5, allowed=keys[:100], exclude=keys[[42]])
    assert keys[42] not in h.keys and len(h) == 5 and np.isin(h.keys, keys[:100]).all()


# ---- changes in place ---------------------------------------------------------------------

def test_add_replace_remove_keep_search_equal_to_exact(tmp_path):
    ix, X, keys, _ = small_index(tmp_path)
    fp0 = vk.Fingerprint.of(keys)
    w = vx.VectorIndex.open(ix.path, MODEL, 32, expected=fp0, writable=True)
    rng = np.random.default_rng(9)
    new_X, _ = clustered(300, 32, clusters=12, seed=9)
    new_keys = vk.keys_for(f"new-{i}" for i in range(300))
    replaced = rng.choice(len(keys), 100, replace=False)
    repl_X, _ = clustered(100, 32, clusters=12, seed=10)
    removed = np.setdiff1d(rng.choice(len(keys), 200, replace=False), replaced)

    assert w.add(new_keys, new_X) == 300
    w.add(keys[replaced], repl_X)
    assert w.remove(keys[removed]) == removed.size
    assert w.remove(vk.keys_for(["never-there"])) == 0

    truth = {int(k): v for k, v in zip(keys, X)}
    truth.update({int(k): v for k, v in zip(keys[replaced], repl_X)})
    truth.update({int(k): v for k, v in zip(new_keys, new_X)})
    for k in keys[removed]:
        del truth[int(k)]
    tk = np.array(list(truth), np.uint64)
    tX = np.stack(list(truth.values()))
    gone = set(keys[removed].tolist())

    def check(index):
        assert len(index) == len(truth)
        assert index.keys().tolist() == sorted(truth)
        assert index.fingerprint() == vk.Fingerprint.of(tk)
        queries = np.concatenate([X[removed[:10]], repl_X[:10], new_X[:10], X[:10]])
        rec = []
        pos = {int(key): i for i, key in enumerate(tk)}
        for q in queries:
            # Exact over every held row: equal to brute force over the same set.
            assert_exact(index.search(q, 20, allowed=index.keys()), tX, tk, q, 20)
            # Through the graph: never an erased row, scores from the current vectors, and
            # near-exact (a concurrently built HNSW graph may leave a rare node unreached).
            h = index.search(q, 20)
            assert not gone & set(h.keys.tolist()) and len(h) == 20
            s = tX[[pos[int(key)] for key in h.keys]] @ q
            np.testing.assert_allclose(h.similarity, s, atol=2e-3)
            rec.append(len(set(h.keys.tolist()) & set(exact(tX, tk, q, 20).tolist())) / 20)
        assert np.mean(rec) >= 0.97
        # A replaced row is found by its new vector, at similarity ~1.
        found = [index.search(v, 3).keys[0] == key for key, v in zip(keys[replaced], repl_X)]
        assert np.mean(found) >= 0.97
        assert not index.contains(keys[removed]).any()
        assert index.contains(new_keys).all()
        np.testing.assert_allclose(index.vectors(keys[replaced[:5]]), repl_X[:5], atol=2e-3)
        with pytest.raises(KeyError):
            index.vectors(keys[removed[:1]])

    check(w)  # before saving (the writer's own view)
    w.save(stamp="run-2")
    check(w)
    w.close()
    r = vx.VectorIndex.open(ix.path, MODEL, 32, expected=vk.Fingerprint.of(tk), stamp="run-2")
    check(r)
    # The old fingerprint no longer matches: a reader checking against it must rebuild.
    with pytest.raises(vx.IndexStale):
        vx.VectorIndex.open(ix.path, MODEL, 32, expected=fp0)


def test_readers_keep_working_and_pick_up_a_new_generation(tmp_path):
    ix, X, keys, _ = small_index(tmp_path)
    reader = vx.VectorIndex.open(ix.path, MODEL, 32)
    w = vx.VectorIndex.open(ix.path, MODEL, 32, writable=True)
    w.add(vk.keys_for(["fresh"]), X[:1] * -1.0)
    w.remove(keys[:1])
    w.save()
    w.close()
    files = sorted(p.name for p in ix.path.parent.iterdir())
    assert len([f for f in files if f.endswith(".usearch")]) == 1  # old generation gone
    # The reader still answers from the generation it mapped (unlinked, not overwritten).
    assert reader.search(X[0], 1).keys[0] == keys[0]
    keys_saved, vecs_saved = reader.saved_rows()
    assert keys_saved.tolist() == sorted(keys.tolist()) and vecs_saved.dtype == np.float16
    fresh = reader.refreshed()
    assert fresh.generation == reader.generation + 1
    assert fresh.search(-X[0], 1).keys[0] == vk.key_of("fresh")
    assert keys[0] not in fresh.search(X[0], 10).keys
    assert fresh.refreshed() is fresh


def test_one_writer_at_a_time_and_readers_cannot_write(tmp_path):
    ix, X, keys, _ = small_index(tmp_path)
    with pytest.raises(PermissionError):
        ix.add(keys[:1], X[:1])
    with pytest.raises(PermissionError):
        ix.remove(keys[:1])
    w = vx.VectorIndex.open(ix.path, MODEL, 32, writable=True)
    with pytest.raises(RuntimeError, match="another writer"):
        vx.VectorIndex.open(ix.path, MODEL, 32, writable=True)
    w.close()
    vx.VectorIndex.open(ix.path, MODEL, 32, writable=True).close()


def test_clear_errors_for_bad_vectors_and_queries(tmp_path):
    ix, X, keys, _ = small_index(tmp_path)
    with pytest.raises(ValueError, match="64 dimensions but the index holds 32"):
        ix.search(np.ones(64), 5)
    with pytest.raises(ValueError, match="all zeros"):
        ix.search(np.zeros(32), 5)
    w = vx.VectorIndex.open(ix.path, MODEL, 32, writable=True)
    with pytest.raises(ValueError, match="dimensions"):
        w.add(keys[:2], np.ones((2, 16)))
    with pytest.raises(ValueError, match="3 keys for 2 vectors"):
        w.add(keys[:3], X[:2])
    with pytest.raises(ValueError, match="NaN"):
        w.add(keys[:1], np.full((1, 32), np.nan))
    with pytest.raises(ValueError, match="twice"):
        w.add(np.array([7, 7], np.uint64), X[:2])
    w.close()
    with pytest.raises(ValueError, match="positive"):
        vx.VectorIndex.create(tmp_path / "x.json", MODEL, 0)


# ---- never trusting a file that does not match --------------------------------------------

def test_open_refuses_missing_stale_other_model_wrong_dim_and_corrupt_files(tmp_path):
    ix, X, keys, _ = small_index(tmp_path)
    path, fp = ix.path, vk.Fingerprint.of(keys)
    ix.close()
    del ix
    assert len(vx.VectorIndex.open(path, MODEL, 32, expected=fp)) == len(keys)

    with pytest.raises(vx.IndexMissing):
        vx.VectorIndex.open(tmp_path / "nowhere.json", MODEL, 32)
    with pytest.raises(vx.IndexStale):
        vx.VectorIndex.open(path, MODEL, 32, expected=vk.Fingerprint.of(keys[1:]))
    swapped = keys.copy()
    swapped[0] = vk.key_of("someone-else")
    with pytest.raises(vx.IndexStale):
        vx.VectorIndex.open(path, MODEL, 32, expected=vk.Fingerprint.of(swapped))
    with pytest.raises(vx.IndexStale):
        vx.VectorIndex.open(path, MODEL, 32, stamp="a later ingest")
    with pytest.raises(vx.IndexOtherModel):
        vx.VectorIndex.open(path, "emotion2vec_plus_base", 32, expected=fp)
    with pytest.raises(vx.IndexWrongDim):
        vx.VectorIndex.open(path, MODEL, 768, expected=fp)

    manifest = json.loads(path.read_text())
    graph = path.parent / manifest["files"]["graph"]["name"]
    vecs = path.parent / manifest["files"]["vecs"]["name"]
    good_graph, good_vecs, good_manifest = graph.read_bytes(), vecs.read_bytes(), path.read_text()

    def corrupt(reason_fragment=None):
        with pytest.raises(vx.IndexCorrupt) as e:
            vx.VectorIndex.open(path, MODEL, 32, expected=fp)
        assert e.value.reason == "corrupt"
        graph.write_bytes(good_graph)
        vecs.write_bytes(good_vecs)
        path.write_text(good_manifest)

    graph.write_bytes(good_graph[: len(good_graph) // 2])  # truncated
    corrupt()
    graph.write_bytes(os.urandom(len(good_graph)))  # garbage of the right size
    corrupt()
    vecs.write_bytes(good_vecs[:-4096])  # truncated matrix
    corrupt()
    path.write_text("{not json")
    corrupt()
    # A manifest that vouches for a garbage graph (right size and digest) is still refused.
    graph.write_bytes(os.urandom(len(good_graph)))
    lying = json.loads(good_manifest)
    lying["files"]["graph"]["digest"] = vx._digest(graph)
    path.write_text(json.dumps(lying))
    corrupt()
    # Keys that disagree with the manifest's fingerprint.
    keys_file = path.parent / manifest["files"]["keys"]["name"]
    good_keys = keys_file.read_bytes()
    shifted = np.load(keys_file).copy()
    shifted[0] ^= np.uint64(1)
    np.save(keys_file, shifted)
    lying = json.loads(good_manifest)
    lying["files"]["keys"]["digest"] = vx._digest(keys_file)
    path.write_text(json.dumps(lying))
    corrupt()
    keys_file.write_bytes(good_keys)

    # After each refusal the caller rebuilds; the rebuilt index opens cleanly.
    assert len(vx.VectorIndex.open(path, MODEL, 32, expected=fp)) == len(keys)
    rebuilt = vx.build(path, MODEL, 32, [(keys, X)])
    assert rebuilt.generation == 1 and rebuilt.fingerprint() == fp


def test_index_paths_are_per_model_and_dim(tmp_path):
    a = vx.index_path(tmp_path / "s.duckdb", MODEL, 1024)
    assert a.parent == tmp_path / "s.duckdb.ann"
    assert a != vx.index_path(tmp_path / "s.duckdb", MODEL, 768)
    assert a != vx.index_path(tmp_path / "s.duckdb", "/models/emotion2vec_plus_large", 1024)
    assert "/" not in a.name


def test_an_erased_vector_leaves_the_saved_graph_file(tmp_path):
    """usearch's remove only frees a slot: compaction overwrites free slots before it saves,
    so no file of the index holds a byte of an erased vector (issue 23: erasure reaches the
    similarity index)."""
    from core.index import index_compact
    from usearch.index import Index
    ix, X, keys, _ = small_index(tmp_path, n=300)
    ix.close()
    gone = keys[:5]
    graph = Index.restore(str(next(ix.path.parent.glob("*.usearch"))))
    stored = [np.asarray(graph.get(int(k), dtype=np.int8)).tobytes() for k in gone]
    assert all(len(v) == 32 and v in graph.save() for v in stored)  # as the file holds them
    w = vx.VectorIndex.open(ix.path, MODEL, 32, expected=vk.Fingerprint.of(keys), writable=True)
    assert w.remove(gone) == 5
    w.save()
    w.close()
    assert index_compact.compact(ix.path, wait=True) is not None
    files = [f for f in ix.path.parent.iterdir() if f.is_file()]
    assert not any(v in f.read_bytes() for v in stored for f in files)
    r = vx.VectorIndex.open(ix.path, MODEL, 32, expected=vk.Fingerprint.of(keys[5:]))
    assert len(r) == 295 and not set(r.search(X[0], 10).keys.tolist()) & set(gone.tolist())
