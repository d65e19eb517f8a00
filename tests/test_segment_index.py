"""The ANN index beside a real store: the writer keeps it equal to the store through adds,
re-ingests and erasures; a stale, corrupt or missing one is rebuilt, never used; similar-moment
searches return only what the reader's scope and the filters admit; pattern runs are stored
with their run id; the CLI rebuilds and clusters."""
from __future__ import annotations

import shutil

import dataclasses

import numpy as np
import pytest
from typer.testing import CliRunner

from core.admin import erasure
from core.index import pattern_runs, segment_index, similar
from core.index import vector_index as vx
from core.guard.access import operator
from core.storage.queries import Reader
from core.storage.store import Store
from core.storage.vector_keys import Fingerprint, key_of
from tests import views_fixtures as vf
from tests.scope_fixtures import ANALYST, SUP_A, results
from tests.store_fixtures import RULES, writer_for


def store_rows(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """(keys, unit embeddings) of every indexed row, read from the store, key-sorted."""
    df = store.query("SELECT g.segment_id, g.segment_key, g.embedding FROM segments g JOIN "
                     "sessions s USING (session_id) WHERE s.status = 'ok' AND "
                     "g.embedding IS NOT NULL ORDER BY g.segment_key")
    assert all(key_of(s) == int(k) for s, k in zip(df.segment_id, df.segment_key))
    x = np.stack(df.embedding.to_numpy()).astype(np.float32) if len(df) else np.zeros((0, 4))
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return df.segment_key.to_numpy(np.uint64), np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def assert_index_equals_store(store: Store) -> vx.VectorIndex:
    """The saved index opens against the store's fingerprint and stamp (no rebuild) and holds
    exactly the store's rows with the store's vectors."""
    space = segment_index.spaces(store)[0]
    with store.read() as con:
        fp, stamp = segment_index.state(con, space)
    ix = vx.VectorIndex.open(segment_index.path_of(store, space), space.model, space.dim, fp,
                             stamp)
    keys, x = store_rows(store)
    assert np.array_equal(ix.keys(), keys)
    np.testing.assert_allclose(ix.vectors(keys), x, atol=2e-3)
    return ix


def _build_small(folder):
    """A store of the first 12 sessions of the views fixture, saved one by one."""
    store = Store(folder / "s.duckdb")
    store.migrate()
    w = writer_for(store.path, RULES)
    run = w.start_run("tiny-random", "", False, "cpu", "engine", {})
    results = vf.sessions()[:12]
    for r in results:
        w.save(r, run)
    return store, w, run, results


@pytest.fixture()
def small_fresh(tmp_path):
    return _build_small(tmp_path)


@pytest.fixture(scope="module")
def _small_template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small_template")
    _, _, run, results = _build_small(folder)
    return folder, run, results


@pytest.fixture()
def small(tmp_path, _small_template):
    """The same store copied file for file (the database and everything beside it), so each
    test changes its own copy without saving twelve sessions again."""
    folder, run, results = _small_template
    copy = tmp_path / "small"
    shutil.copytree(folder, copy)
    store = Store(copy / "s.duckdb")
    return store, writer_for(store.path, RULES), run, results


def test_each_commit_extends_the_index_in_place(small_fresh):
    store, w, run, results = small_fresh
    assert w.last_index_update["added"] == len(results[-1].segments)
    assert w.last_index_update["repaired"] == 0 and w.last_index_update["rebuilt"] == 0
    before = assert_index_equals_store(store)
    extra = vf.sessions()[12]
    w.save(extra, run)
    after = assert_index_equals_store(store)
    assert after.generation == before.generation + 1
    assert len(after) == len(before) + len(extra.segments)


def test_a_commit_hands_the_index_its_rows_from_memory(small, monkeypatch):
    """The writer's embeddings go to the index as it holds them, not read back from the store,
    and the index ends equal to the store; a session twice in one commit reads them back."""
    store, w, run, results = small
    read_back = []
    real = segment_index._rows
    monkeypatch.setattr(segment_index, "_rows", lambda *a, **k: read_back.append(1) or real(*a, **k))
    extra = vf.sessions()[12]
    w.save_many([extra, vf.sessions()[13]], run)
    assert read_back == [] and w.last_index_update["added"] == len(extra.segments) + len(
        vf.sessions()[13].segments)
    assert_index_equals_store(store)
    probe = extra.segments[0]
    hits = similar.neighbours(Reader(store, operator()), "tiny-random", len(probe.embedding),
                              probe.embedding, 5)[0]
    assert hits.segment_id.iloc[0] == probe.segment_id
    assert hits.similarity.iloc[0] == pytest.approx(1.0, abs=2e-3)
    w.save_many([results[2], results[2]], run)  # the later copy replaced the earlier's rows
    assert read_back and w.last_index_update["added"] == len(results[2].segments)
    assert_index_equals_store(store)


def test_the_running_fingerprint_follows_saves_resaves_and_an_erasure(small):
    """After the first commit (compared with the store in full), each commit's index is checked
    incrementally, and its running fingerprint and stamp stay the store's."""
    store, w, run, results = small
    space = segment_index.spaces(store)[0]
    path = segment_index.path_of(store, space)
    w.save(vf.sessions()[12], run)
    assert w.last_index_update["checked"] == 1
    old, moved = results[3], results[4]
    steps = [
        lambda: w.save_many([vf.sessions()[13],  # a new session, and two re-saves in one commit
                             dataclasses.replace(old, segments=old.segments[:3]),  # fewer rows
                             dataclasses.replace(moved, segments=tuple(  # same ids, new vectors
                                 dataclasses.replace(s, embedding=-s.embedding)
                                 for s in moved.segments))], run),
        lambda: erasure.erase(store, "session", results[5].session_id, "test"),
        lambda: w.save(vf.sessions()[14], run),  # the first commit after the erasure
    ]
    for step in steps:
        step()
        if step is not steps[1]:
            assert w.last_index_update["checked"] == 0  # no fingerprint of every row
        with store.read() as con:
            fp, stamp = segment_index.state(con, space)
        assert segment_index.running_fingerprint(store, space) == fp
        assert vx.VectorIndex.open(path, space.model, space.dim).manifest["stamp"] == stamp
    assert_index_equals_store(store)


def test_reingest_replaces_a_sessions_rows(small):
    store, w, run, results = small
    old = results[3]
    # Same session, fewer segments and other embeddings: the dropped ids must leave the index
    # and the kept ids must carry the new vectors.
    segs = tuple(dataclasses.replace(s, embedding=-s.embedding + 0.5) for s in old.segments[:4])
    w.save(dataclasses.replace(old, segments=segs), run)
    assert w.last_index_update["removed"] == len(old.segments)
    assert w.last_index_update["added"] == 4
    ix = assert_index_equals_store(store)
    gone = [key_of(s.segment_id) for s in old.segments[4:]]
    assert not ix.contains(gone).any()


def test_erasure_removes_keys_and_an_erased_segment_is_never_a_neighbour(small):
    store, w, run, results = small
    victim = results[5]
    probe = victim.segments[0]
    r = Reader(store, operator())
    # The victim's own vector finds it first while it is stored (own session allowed).
    other = results[6].segments[0].segment_id
    before = similar.neighbours(r, "tiny-random", 4, probe.embedding, 3)[0]
    assert before.segment_id.iloc[0] == probe.segment_id  # itself first, with what a hit shows
    assert list(before.columns) == similar.META_COLUMNS + ["similarity"]
    assert before.similarity.iloc[0] == pytest.approx(1.0, abs=2e-3)
    erasure.erase(store, "session", victim.session_id, "test")
    ix = assert_index_equals_store(store)
    assert not ix.contains([key_of(s.segment_id) for s in victim.segments]).any()
    hits = similar.neighbours(r, "tiny-random", 4, probe.embedding, 50)[0]
    assert victim.session_id not in set(hits.session_id)
    assert similar.similar_to(r, other, 50).hits.session_id.ne(victim.session_id).all()
    # Resuming the same erasure again (a crash after the rows went) changes nothing.
    erasure.after_rows_erased(store.path.resolve(), [victim.session_id],
                              [s.segment_id for s in victim.segments])
    assert_index_equals_store(store)


def test_a_missed_update_is_stale_and_rebuilt_not_used(small, monkeypatch):
    store, w, run, results = small
    space = segment_index.spaces(store)[0]
    path = segment_index.path_of(store, space)
    # The index misses a commit (say the process died between commit and index save) ...
    monkeypatch.setattr(segment_index, "apply", lambda *a: (_ for _ in ()).throw(OSError("x")))
    old = results[2]
    moved = tuple(dataclasses.replace(s, embedding=s.embedding[::-1] * 3) for s in old.segments)
    w.save(dataclasses.replace(old, segments=moved), run)  # same ids, new vectors
    assert w.last_index_update is None
    with store.read() as con:
        fp, stamp = segment_index.state(con, space)
    # ... its keys still match (same ids) but the stamp does not: refused.
    assert vx.VectorIndex.open(path, space.model, space.dim).fingerprint() == fp
    with pytest.raises(vx.IndexStale):
        vx.VectorIndex.open(path, space.model, space.dim, fp, stamp)
    ix = segment_index.for_search(store, space)
    np.testing.assert_allclose(ix.vectors([key_of(moved[0].segment_id)])[0],
                               moved[0].embedding / np.linalg.norm(moved[0].embedding),
                               atol=2e-3)
    assert_index_equals_store(store)
    # A missed add is repaired by the next commit's check, without a rebuild.
    w.save(vf.sessions()[12], run)
    monkeypatch.undo()
    w.save(vf.sessions()[13], run)
    assert w.last_index_update["repaired"] == len(vf.sessions()[12].segments)
    assert_index_equals_store(store)


def test_a_corrupt_or_missing_index_is_rebuilt(small):
    store, w, run, results = small
    space = segment_index.spaces(store)[0]
    path = segment_index.path_of(store, space)
    graph = next(path.parent.glob(f"{path.stem}.*.usearch"))
    data = bytearray(graph.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    graph.write_bytes(bytes(data))
    with pytest.raises(vx.IndexCorrupt):
        vx.VectorIndex.open(path, space.model, space.dim)
    segment_index.for_search(store, space)
    assert_index_equals_store(store)
    path.unlink()  # no manifest: missing
    assert len(segment_index.for_search(store, space)) == len(store_rows(store)[0])
    # A corrupt index is also repaired by the next commit rather than failing it.
    path.write_text("{ not json")
    w.save(vf.sessions()[12], run)
    done = w.last_index_update
    assert done["repaired"] + done["rebuilt"] > 0  # refilled from the store, never trusted
    assert_index_equals_store(store)


@pytest.fixture(scope="module")
def scoped(tmp_path_factory):
    """The two-team store of tests/scope_fixtures.py, with 8-d embeddings that differ."""
    folder = tmp_path_factory.mktemp("scoped_ann")
    rng = np.random.default_rng(4)
    store = Store(folder / "emoscope.duckdb")
    store.migrate()
    w = writer_for(store.path, RULES)
    run = w.start_run("tiny-random", "", False, "cpu", "engine", {})
    teams: dict[str, list[str]] = {}
    for r in results(folder / "archive"):
        segs = tuple(dataclasses.replace(s, embedding=rng.normal(size=8).astype(np.float32))
                     for s in r.segments)
        w.save(dataclasses.replace(r, segments=segs), run)
        teams.setdefault(r.meta.team, []).append(r.session_id)
    return store.path, teams


def test_similar_returns_only_what_the_scope_and_filters_admit(scoped):
    db, teams = scoped
    store = Store(db)
    admin, lead = Reader(store, operator()), Reader(store, SUP_A)
    seg_a = store.query("SELECT segment_id FROM segments WHERE session_id = ? LIMIT 1",
                        [teams["A"][0]]).segment_id[0]
    seg_b = store.query("SELECT segment_id FROM segments WHERE session_id = ? LIMIT 1",
                        [teams["B"][0]]).segment_id[0]
    everyone = similar.similar_to(admin, seg_a, 100, other_sessions=False)
    assert set(everyone.hits.session_id) - set(teams["A"])  # other teams are near too
    mine = similar.similar_to(lead, seg_a, 100, other_sessions=False)
    assert len(mine.hits) and set(mine.hits.session_id) <= set(teams["A"])
    assert mine.searched == len(mine.hits) and mine.method == "exact"
    assert seg_a not in set(mine.hits.segment_id)
    assert similar.similar_to(lead, seg_b, 10) is None  # out of scope: not even the query
    assert similar.similar_to(Reader(store, ANALYST), seg_a, 10) is None
    angry = similar.similar_to(admin, seg_a, 100, labels=["angry"], speakers=["customer"])
    assert len(angry.hits) and set(angry.hits.label) == {"angry"}
    assert set(angry.hits.speaker) == {"customer"}
    assert angry.hits.session_id.ne(everyone.segment["session_id"]).all()
    # k comes back whenever k admitted rows exist, and similarities are sorted.
    n = store.query("SELECT count(*) AS n FROM segments g JOIN sessions s USING (session_id) "
                    "WHERE s.team = 'B' AND g.label = 'angry'").n[0]
    team_b = similar.similar_to(admin, seg_a, 100, labels=["angry"], teams=["B"])
    assert len(team_b.hits) == n and set(team_b.hits.team) == {"B"}
    assert np.all(np.diff(team_b.hits.similarity.to_numpy()) <= 1e-6)


def test_patterns_are_stored_with_their_run_and_replaced_by_the_next(small):
    store, w, run, results = small
    first = pattern_runs.compute(store, k=3, seed=1)
    pats = store.query("SELECT * FROM patterns ORDER BY pattern")
    segs = store.query("SELECT * FROM segment_patterns")
    n = len(store_rows(store)[0])
    assert list(pats.pattern) == [0, 1, 2] and set(pats.run_id) == {first.run_id}
    assert pats["size"].sum() == n == len(segs) and set(segs.run_id) == {first.run_id}
    assert sorted(segs.groupby("pattern").size().tolist(), reverse=True) == first.sizes
    assert segs.representative.notna().sum() == 3 * 5
    second = pattern_runs.compute(store, k=4, seed=1)
    assert set(store.query("SELECT run_id FROM segment_patterns").run_id) == {second.run_id}
    r = Reader(store, operator())
    assert len(r.patterns()) == 4 and len(r.pattern_segments(sample=10)) == 10
    # Erasing a session takes its pattern rows with it.
    erasure.erase(store, "session", results[0].session_id, "test")
    assert results[0].session_id not in set(r.pattern_segments().session_id)


def test_cli_rebuilds_the_index_and_clusters(small):
    from cli.main import app
    store, w, run, results = small
    space = segment_index.spaces(store)[0]
    gen = vx.VectorIndex.open(segment_index.path_of(store, space), space.model,
                              space.dim).generation
    out = CliRunner().invoke(app, ["index", "rebuild", "--db", str(store.path)])
    assert out.exit_code == 0, out.output
    assert f"{len(store_rows(store)[0]):,} segments" in out.output
    assert assert_index_equals_store(store).generation == 1 != gen or gen == 1
    out = CliRunner().invoke(app, ["patterns", "--db", str(store.path), "--k", "2"])
    assert out.exit_code == 0, out.output
    assert " in 2 patterns" in out.output
    assert store.query("SELECT count(DISTINCT pattern) AS n FROM segment_patterns").n[0] == 2
    bad = CliRunner().invoke(app, ["patterns", "--db", str(store.path.with_name("no.duckdb"))])
    assert bad.exit_code == 2 and "no database" in bad.output


def test_old_rows_get_their_keys_from_the_migration(tmp_path):
    from core.storage.migrations import MIGRATIONS
    db = tmp_path / "old.duckdb"
    store = Store(db)
    with store.write() as con:  # a store as it was before the key column
        con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, "
                    "applied_at TIMESTAMP)")
        for name, sql in MIGRATIONS:
            if name == "0008_segment_keys":
                break
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, now())", [name])
        con.execute("INSERT INTO segments (segment_id, session_id, channel, speaker, start_s, "
                    "end_s, label, confidence, scores) VALUES ('sx-c0-00001', 'sx', 0, 'agent', "
                    "0, 1, 'neutral', 0.9, [0,0,0,0,1,0,0,0,0])")
    assert "0008_segment_keys" in store.migrate()
    assert int(store.query("SELECT segment_key FROM segments").segment_key[0]) == \
        key_of("sx-c0-00001")
    assert Fingerprint.of(np.array([key_of("sx-c0-00001")], np.uint64)).count == 1


def test_a_silent_moments_zero_embedding_has_no_neighbours(small):
    store, w, run, results = small
    r = results[1]
    zero = dataclasses.replace(r.segments[0], embedding=np.zeros(4, np.float32))
    w.save(dataclasses.replace(r, segments=(zero,) + r.segments[1:]), run)
    assert_index_equals_store(store)
    found = similar.similar_to(Reader(store, operator()), zero.segment_id, 10)
    assert found is not None and found.hits.empty and found.searched == 0
    assert len(similar.similar_to(Reader(store, operator()), r.segments[1].segment_id, 10).hits)


def test_a_group_save_updates_the_index_once_for_the_group(small):
    store, w, run, results = small
    before = assert_index_equals_store(store).generation
    again = dataclasses.replace(results[4], segments=results[4].segments[:3])
    group = [vf.sessions()[12], again, vf.sessions()[13]]
    assert w.save_many(group, run) == [True, True, True]
    ix = assert_index_equals_store(store)
    assert ix.generation == before + 1  # one new generation for the whole group
    assert w.last_index_update["added"] == sum(len(r.segments) for r in group)
    assert not ix.contains([key_of(s.segment_id) for s in results[4].segments[3:]]).any()


def test_the_similar_maps_basis_places_two_clusters_apart():
    """similar.pca_basis: the Similar page's map, where a query clip is placed on the same axes."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16)) + 5.0
    b = rng.normal(size=(200, 16)) - 5.0
    mean, axes = similar.pca_basis(np.vstack([a, b]))
    assert axes.shape == (2, 16)
    first, second = (a - mean) @ axes[0], (b - mean) @ axes[0]
    assert first.min() > second.max() or first.max() < second.min()
    mean, axes = similar.pca_basis(np.zeros((0, 16)))
    assert mean.shape == (16,) and axes.shape == (2, 16)
