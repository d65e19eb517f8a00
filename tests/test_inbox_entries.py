"""Every inbox entry becomes a job or a named failure, a half-copied file is never stored short,
and one worker runs per store (issue 23, items 5, 6 and 7)."""
from __future__ import annotations

import hashlib
import os
import time

import pytest

import ingest.worker as worker_mod
from core.admin import erasure
from core.intake import inbox
from core.intake.jobs import new_job_id
from core.admin.settings import Retention
from core.storage.store import Store
from ingest.worker import Worker, WorkerBusy, default_config, hold_worker_lock
from tests.audio_gen import write
from tests.store_fixtures import writer_for

DAY = 86400


def worker(db, model=None, **kw) -> Worker:
    cfg = default_config(db, poll_s=0.01, **{"settle_s": 0, **kw})
    return Worker(writer_for(db), model, cfg, echo=lambda line: None)


def jobs_of(db):
    return Store(db).query("SELECT * FROM jobs ORDER BY created_at, job_id").set_index("file_name")


def test_an_upload_named_like_a_sidecar_keeps_its_metadata_and_its_job_id(tmp_path):
    db = tmp_path / "emoscope.duckdb"
    job_id = new_job_id()
    audio = inbox.put(tmp_path / "inbox", "secret_call.json", b"RIFF....WAVE",
                      {"customer_id": "c-9", "team": "A"}, job_id=job_id)
    assert inbox.sidecar_of(audio) != audio and inbox.sidecar_of(audio).exists()
    w = worker(db)
    w.start()
    assert w.scan() == 1
    job = jobs_of(db).loc[audio.name]
    assert job.job_id == job_id  # the id the uploader was promised: it reads as a job
    assert '"team": "A"' in job.metadata and '"customer_id": "c-9"' in job.metadata


def test_dot_files_sub_folders_and_links_become_jobs_or_named_failures(tmp_path):
    db = tmp_path / "emoscope.duckdb"
    box = tmp_path / "inbox"
    (box / "sub" / "deeper").mkdir(parents=True)
    for name in (".hidden.wav", "sub/deeper/call.wav"):
        (box / name).write_bytes(b"not audio")
    (box / "link.wav").symlink_to("/etc/hostname")
    (box / ".u1.wav.abc123.part").write_bytes(b"an upload still arriving")
    stale = box / ".u2.wav.def456.part"
    stale.write_bytes(b"an upload that never finished")
    os.utime(stale, (time.time() - 2 * DAY,) * 2)
    w = worker(db)
    w.start()
    assert w.scan() == 4
    jobs = jobs_of(db)
    assert set(jobs.index) == {".hidden.wav", "sub/deeper/call.wav", "link.wav", stale.name}
    while w.step():  # no model needed: none of them gets that far
        pass
    jobs = jobs_of(db)
    assert set(jobs.status) == {"failed"}
    assert "a link, not a file" in jobs.loc["link.wav"].error
    assert (box / ".u1.wav.abc123.part").exists()  # fresh: still the uploader's
    assert not (box / "link.wav").is_symlink() and not (box / ".hidden.wav").exists()
    assert len(list((tmp_path / "failed").iterdir())) == 4  # kept for a look, then retention


def test_retention_and_erasure_reach_entries_no_worker_took(tmp_path):
    db = tmp_path / "emoscope.duckdb"
    Store(db).migrate()
    box = tmp_path / "inbox"
    (box / "sub").mkdir(parents=True)
    old = [box / "sub" / "forgotten.wav", box / ".u3.wav.0a0b0c.part"]
    for f in old:
        f.write_bytes(b"RIFF")
        os.utime(f, (time.time() - 40 * DAY,) * 2)
    mine = inbox.put(box / "sub", "call.wav", b"RIFF", {"customer_id": "c-7"})
    assert erasure.apply_retention(Store(db), Retention(audio_days=30))["audio_files"] == 2
    assert not any(f.exists() for f in old)
    erasure.erase(Store(db), "customer", "c-7", "admin")  # waiting in a sub-folder: found
    assert not mine.exists() and not inbox.sidecar_of(mine).exists()


def test_a_file_that_grows_while_analysed_is_requeued_never_stored_short(tmp_path, model,
                                                                       speech, monkeypatch):
    db = tmp_path / "emoscope.duckdb"
    box = tmp_path / "inbox"
    box.mkdir()
    whole = write(tmp_path / "whole.wav", speech).read_bytes()
    target = box / "call.wav"
    target.write_bytes(whole[:len(whole) // 2])  # the copy is half done when it is taken
    real = worker_mod.process_file

    def copy_finishes_meanwhile(path, *a, **kw):
        done = real(path, *a, **kw)
        if path.stat().st_size < len(whole):
            with open(path, "ab") as f:
                f.write(whole[len(whole) // 2:])
        return done
    monkeypatch.setattr(worker_mod, "process_file", copy_finishes_meanwhile)
    w = worker(db, model, settle_s=0.02)
    w.run(once=True)
    s = Store(db).query("SELECT sha256, duration_s FROM sessions")
    assert list(s.sha256) == [hashlib.sha256(whole).hexdigest()]  # the whole file, once
    assert s.duration_s[0] == pytest.approx(speech.size / 16000, abs=0.05)
    assert list(jobs_of(db).status) == ["done"]


def test_a_second_worker_on_the_same_store_is_refused_with_one_line(tmp_path):
    db = tmp_path / "emoscope.duckdb"
    first = hold_worker_lock(db)
    try:
        with pytest.raises(WorkerBusy) as e:
            worker(db).run(once=True)
        msg = str(e.value)
        assert f"pid {os.getpid()}" in msg and str(db) in msg and "\n" not in msg
        assert not Store(db).exists()  # it stopped before touching anything
    finally:
        os.close(first)
    assert worker(db).run(once=True)["done"] == 0  # free again once the first has gone
