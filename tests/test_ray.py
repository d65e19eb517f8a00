"""The Ray executor on the test run's Ray cluster (`ray_cluster` in conftest: two local nodes,
this process a driver joined by address): the same rows as the local executor from a mixed
folder with broken files, `emoscope import` idempotent by SHA-256 (and --force
replacing), and a run whose prepare process is killed, restarted over half-done shards."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.storage.store import Store
from tests.audio_gen import copy_and_broken, silence, write
from tests.store_compare import differences
from tests.store_fixtures import writer_for

BROKEN = {"empty.wav", "text.mp3", "silent.wav"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, speech, call_audio):
    d = tmp_path_factory.mktemp("mixed-ray")
    write(d / "diary-0.pcm16.wav", np.concatenate([speech * 0.5, silence(0.4), speech[:16_000]]),
          "pcm16.wav")
    write(d / "diary-1-dies.mp3", np.concatenate([speech * 0.7, silence(0.3), speech[:32_000]]),
          "mp3")
    write(d / "call.wav", call_audio)
    copy_and_broken(d, "diary-0.pcm16.wav")
    return d


@pytest.fixture(scope="module")
def loudness():
    """The toy analyser of tests/test_analysers.py, registered in this process for the runs
    of this module (the Ray workers learn it from the run)."""
    from core.storage import analysers
    from tests import loudness_analyser
    analysers.register_analyser(loudness_analyser.Loudness)
    yield
    analysers.unregister("loudness")


@pytest.fixture(scope="module")
def local_store(mixed, model, tmp_path_factory, loudness):
    """The reference: the mixed folder through the local (streaming) executor."""
    from ingest.pipeline import ingest_paths
    db = tmp_path_factory.mktemp("local") / "local.duckdb"
    report = ingest_paths([mixed], writer_for(db), model, workers=1)
    return Store(db), report


def shards_of(folder: Path, shards: Path, **kw):
    from ingest.options import IngestOptions
    from ingest.pipeline import expand, meta_lookup
    from ingest.ray_executor import run_shards
    info = {"model": "tiny-random", "model_path": "", "trained": False, "device": "cpu",
            "engine": "engine"}
    return run_shards(expand([folder]), meta_lookup({}), shards, "tiny-random", "cpu",
                      IngestOptions(), info, **kw)


@pytest.fixture(scope="module")
def shards(ray_driver, mixed, tmp_path_factory, loudness):
    out = tmp_path_factory.mktemp("shards") / "staging"
    return out, shards_of(mixed, out)


def imported(shards: Path, db: Path, force: bool = False):
    from core.admin.shard_import import import_shards
    return import_shards(writer_for(db), shards, force)


def test_ray_and_local_store_the_same_rows(shards, local_store, tmp_path):
    folder, run = shards
    reference, local = local_store
    assert run.files == 7 and run.done_before == 0
    by_name = {Path(p).name: (status, error) for p, status, error, _, _ in run.written}
    assert {n for n, (s, _) in by_name.items() if s == "failed"} == BROKEN
    assert by_name["empty.wav"][1] == "empty file (0 bytes)"
    done = imported(folder, tmp_path / "ray.duckdb")
    assert differences(reference, Store(tmp_path / "ray.duckdb")) == []
    assert sorted(Path(p).name for p in done.ok) == sorted(Path(p).name for p in local.ok)
    assert sorted((Path(p).name, why) for p, why in done.failed) == sorted(
        (Path(p).name, why) for p, why in local.failed)
    assert [Path(p).name for p in done.skipped] == ["diary-9-copy.wav"]  # diary-0's audio
    runs = Store(tmp_path / "ray.duckdb").query("SELECT n_ok, n_failed, options, model FROM runs")
    assert runs.n_ok.tolist() == [3] and runs.n_failed.tolist() == [3]
    assert '"executor": "ray"' in runs.options[0] and runs.model[0] == "tiny-random"


def test_import_twice_changes_nothing_and_force_replaces(shards, local_store, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app
    folder, _ = shards
    db = tmp_path / "twice.duckdb"
    first = imported(folder, db)
    tables = ("sessions", "channels", "segments", "frames", "session_metrics", "alerts", "runs")
    before = {t: Store(db).query(f"SELECT * FROM {t}") for t in tables}
    again = CliRunner().invoke(app, ["import", str(folder), "--db", str(db)])
    assert again.exit_code == 0, again.output
    for t in tables:  # not a row more, not a value changed, not even a run recorded
        assert Store(db).query(f"SELECT * FROM {t}").equals(before[t]), t
    forced = CliRunner().invoke(app, ["import", str(folder), "--db", str(db), "--force"])
    assert forced.exit_code == 1, forced.output  # the broken files are failed rows again
    after = Store(db).query("SELECT session_id, run_id FROM sessions ORDER BY session_id")
    assert len(after) == len(before["sessions"]) and len(Store(db).query("SELECT * FROM runs")) == 2
    assert set(after.run_id) != set(before["sessions"].run_id)  # every session replaced
    assert differences(local_store[0], Store(db)) == []
    assert len(first.ok) == 3


def test_a_killed_prepare_process_is_retried_and_a_restart_redoes_only_missing_shards(
        shards, mixed, local_store, tmp_path):
    from core.intake.shards import shard_key
    from ingest.options import IngestOptions
    from tests.prepare_helpers import DiesOnce
    folder, _ = shards
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    # A run killed mid-way: two files' shards incomplete (no sessions file: never whole).
    redo = {"diary-1-dies.mp3", "call.wav"}
    for name in redo:
        (half / "sessions" / f"{shard_key(mixed / name)}.parquet").unlink()
    flag = tmp_path / "died"
    run = shards_of(mixed, half, task=DiesOnce(IngestOptions(), None, "dies", str(flag)))
    assert flag.exists()  # the process preparing diary-1-dies.mp3 was killed once
    assert run.done_before == 5
    assert sorted(Path(p).name for p, *_ in run.written) == sorted(redo)
    assert all(status == "ok" for _, status, *_ in run.written)
    # The restart continued the folder's run, so the redone files keep their place in it.
    from core.intake.shards import done_keys, open_folder, read_heads
    heads = read_heads(*open_folder(half), done_keys(*open_folder(half)))
    assert len({h.info["run"] for h in heads}) == 1
    assert [Path(h.result.source_path).name for h in heads] == sorted(
        p.name for p in mixed.iterdir())
    imported(half, tmp_path / "half.duckdb")
    assert differences(local_store[0], Store(tmp_path / "half.duckdb")) == []
    segs = Store(tmp_path / "half.duckdb").query(
        "SELECT count(*) AS n, count(DISTINCT segment_id) AS d FROM segments")
    assert segs.n[0] == segs.d[0] > 0


def test_cli_ray_ingest_leaves_shards_with_no_import_then_imports(shards, mixed, tmp_path):
    """Over a staging folder already whole nothing is analysed again: --no-import leaves the
    store alone; without it the shards go in at the end."""
    from typer.testing import CliRunner

    from cli.main import app
    folder, _ = shards
    db = tmp_path / "cli.duckdb"
    args = ["ingest", str(mixed), "--executor", "ray", "--model", "tiny-random", "--device",
            "cpu", "--db", str(db), "--shards", str(folder)]
    left = CliRunner().invoke(app, [*args, "--no-import"])
    assert left.exit_code == 0, left.output
    assert "0 written, 7 already there" in left.output and not db.exists()
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1, done.output  # three broken files, each a failed row
    assert "imported 6 sessions" in done.output
    stored = Store(db).query("SELECT status, count(*) AS n FROM sessions GROUP BY status")
    assert dict(zip(stored.status, stored.n)) == {"ok": 3, "failed": 3}
    usage = CliRunner().invoke(app, ["ingest", str(mixed), "--no-import", "--db", str(db)])
    assert usage.exit_code == 2 and "go with --executor ray" in usage.output


def test_a_model_failure_fails_only_the_files_whose_segments_failed(ray_driver, model, speech,
                                                                    tmp_path, monkeypatch):
    """Two files share one model call; the model fails on one file's segments: that file is a
    failed shard with the reason, the other is analysed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    import ingest.assemble as assemble
    from core.intake.shards import done_keys, open_folder, read_heads
    from core.base.types import SessionMeta
    from ingest.options import IngestOptions
    from ingest.ray_executor import Job, Model, assemble_group, prepare_rows
    real = assemble.run_model

    def run_model(lm, waves, opts, **kw):
        if any(w.mean() > 0.2 for w in waves):  # b.wav's speech sits on a DC offset
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(lm, waves, opts, **kw)

    monkeypatch.setattr(assemble, "run_model", run_model)
    d = tmp_path / "in"
    d.mkdir()
    write(d / "a.wav", np.concatenate([speech * 0.5, silence(0.3)]))
    write(d / "b.wav", np.concatenate([speech * 0.5, silence(0.3)]) + 0.4)
    files = tuple((str(d / n), f"k{n[0]}", SessionMeta()) for n in ("a.wav", "b.wav"))
    job = Job(str(tmp_path / "shards"), IngestOptions(), files, "r")
    prepared = pa.concat_tables([prepare_rows(pa.table({"file": [i]}), job) for i in (0, 1)])
    actor = Model.__new__(Model)  # the actor's state without Ray starting one
    actor.lm, actor.opts, actor.node = model, job.opts, "n"
    out = actor(prepared)
    kinds = set(zip(out["file"].to_pylist(), out["kind"].to_pylist()))
    assert {(0, "segment"), (1, "error")} <= kinds and (0, "error") not in kinds
    for i in (0, 1):
        assemble_group(out.filter(pc.equal(out["file"], i)), job)
    fs, root = open_folder(job.shards)
    heads = {h.key: h for h in read_heads(fs, root, done_keys(fs, root))}
    assert heads["ka"].status == "ok" and heads["ka"].result.sha256
    assert heads["kb"].status == "failed"
    assert heads["kb"].result.error == "model failed: CUDA error: an illegal memory access"



def test_a_registered_analyser_reaches_shards_and_import(shards, tmp_path):
    """The toy analyser (registered in the driver only): the Ray workers imported its module,
    its column and table travelled in the shards, and `emoscope import` stored them (and the
    local run's equal values: test_ray_and_local_store_the_same_rows)."""
    from tests.test_analysers import check_loudness, stored
    folder, _ = shards
    imported(folder, tmp_path / "ray.duckdb")
    check_loudness(*stored(tmp_path / "ray.duckdb"))
