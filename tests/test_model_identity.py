"""One model identity however the model was given: by name, by the directory it resolves to,
by hub id; and the migration that merges runs stored under a resolved path into the name."""
from __future__ import annotations

import shutil

from core.base import models
from core.index import similar
from core.guard.access import operator
from core.storage.queries import EVERY, Reader
from core.storage.store import Store
from tests.store_fixtures import writer_for


def test_name_and_path_are_one_model(tmp_path, ingested_db, speech, model):
    """The store already holds sessions analysed by `tiny-random`; a worker started with
    the directory it resolves to adds one more: one model, and similar moments see both."""
    from ingest.model import load
    from ingest.pipeline import ingest_paths
    from tests.audio_gen import write

    by_path = load(model.path, "cpu")
    assert (by_path.name, by_path.weights) == ("tiny-random", model.weights)
    assert len(model.weights) == 12

    db = tmp_path / "one.duckdb"
    shutil.copy(ingested_db, db)
    (tmp_path / "new").mkdir()
    write(tmp_path / "new" / "upload.wav", speech[: len(speech) // 2])
    assert not ingest_paths([tmp_path / "new"], writer_for(db), by_path).failed

    reader = Reader(Store(db), operator())
    m = reader.models()
    assert list(m.model) == ["tiny-random"] and int(m.sessions.iloc[0]) == 3
    assert set(reader.runs().weights) == {model.weights}
    # From the moment stored by the path-given run, similar moments find the name-given ones.
    segs = reader.export_segments(EVERY)
    upload = segs[segs.file_name == "upload.wav"].segment_id.iloc[0]
    found = similar.similar_to(reader, upload, k=50)
    assert found.searched == int((segs.file_name != "upload.wav").sum())
    names = dict(zip(segs.session_id, segs.file_name))
    assert {names[s] for s in found.hits.session_id} == {"call-001.wav", "diary-001.flac"}


def test_a_model_is_named_the_same_however_given(tmp_path):
    from ingest.model import canonical_name
    assert canonical_name("iic/emotion2vec_plus_base", "iic/emotion2vec_plus_base") \
        == "emotion2vec_plus_base"
    snap = tmp_path / "hub" / "models--emotion2vec--emotion2vec_plus_large" / "snapshots" / "x"
    snap.mkdir(parents=True)
    assert canonical_name(str(snap), str(snap)) == "emotion2vec_plus_large"
    own = tmp_path / "our-finetune"
    own.mkdir()
    assert canonical_name(str(own), str(own)) == "our-finetune"
    assert models.loadable("tiny-random", "/cache/emotion2vec-tiny-random-x") == "tiny-random"
    assert models.loadable("our-finetune", str(own)) == str(own)
    assert models.weights_hash(own / "model.pt") == ""


def test_migration_merges_split_names(tmp_path, monkeypatch):
    import core.storage.store as store_mod
    from core.storage.migrations import MIGRATIONS

    before = [m for m in MIGRATIONS if m[0] < "0012"]
    monkeypatch.setattr(store_mod, "MIGRATIONS", before)
    store = Store(tmp_path / "old.duckdb")
    store.migrate()
    rows = [("r1", "tiny-random", "/c/emotion2vec-tiny-random-7b0ba1b1b4"),
            ("r2", "/c/emotion2vec-tiny-random-7b0ba1b1b4", "/c/emotion2vec-tiny-random-7b0ba1b1b4"),
            ("r3", "ours", "/m/ours"), ("r4", "/m/ours", "/m/ours"),
            ("r5", "/hf/models--emotion2vec--emotion2vec_plus_large/snapshots/a",
             "/hf/models--emotion2vec--emotion2vec_plus_large/snapshots/a")]
    with store.write() as con:
        for run_id, name, path in rows:
            con.execute("INSERT INTO runs (run_id, model, model_path, trained, device, "
                        "started_at) VALUES (?, ?, ?, false, 'cpu', now())", [run_id, name, path])
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    assert "0012_model_identity" in store.migrate()
    got = dict(store.query("SELECT run_id, model FROM runs").itertuples(index=False))
    assert got == {"r1": "tiny-random", "r2": "tiny-random", "r3": "ours", "r4": "ours",
                   "r5": "emotion2vec_plus_large"}
