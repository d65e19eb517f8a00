"""Erasure and retention: `emoscope forget` removes a customer's or a session's rows, recordings
(archive, inbox, failed), jobs and exports, records it in the audit without the id in clear,
and finishes whatever a crash at any step left; the worker applies [retention]."""
from __future__ import annotations

import json
import os
import time

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from core.storage import audit, corrections, notes
from core.admin import erasure
from core.intake import inbox, shards
from core.guard.access import operator
from core.intake.jobs import JobQueue
from core.base.keyed import pseudonym, secret
from core.storage.queries import Reader
from core.admin.settings import Retention
from core.storage.store import Store
from tests.scope_fixtures import ADMIN, build, relocate, results

TABLES = ("sessions", "segments", "frames", "channels", "session_metrics", "alerts",
          "corrections")


@pytest.fixture(scope="module")
def site_template(tmp_path_factory):
    """The store, worker folders and exports, set up once; each test gets a copy (`site`)."""
    db, teams = build(tmp_path_factory.mktemp("erasure") / "data")
    data = db.parent
    store = Store(db)
    # One of the customer's sessions came through the worker: its job, and a copy it failed.
    jobs = JobQueue(store)
    shared = store.query("SELECT session_id FROM sessions WHERE customer_id = 'c-shared' "
                         "ORDER BY session_id").session_id
    job = jobs.add("u1.wav", "call.wav", 1, 1, {"customer_id": "c-shared", "team": "A"})
    jobs.done(job, shared[0])
    (data / "failed").mkdir()
    (data / "failed" / f"{job}.wav").write_bytes(b"RIFF")
    # A new call of the same customer still waiting in the inbox, and one of someone else.
    waiting = [inbox.put(data / "inbox", "next.wav", b"RIFF", {"customer_id": "c-shared"}).name,
               inbox.put(data / "inbox", "other.wav", b"RIFF", {"customer_id": "c-a1"}).name]
    # An export that holds the customer's sessions, and one that does not.
    for name, extra in (("all", []), ("one", ["--person", "c-a1"])):
        res = CliRunner().invoke(app, ["export", "--db", str(db), "--out",
                                       str(data / "exports" / name), "--format", "csv", *extra])
        assert res.exit_code == 0, res.output
    return data, teams, job, waiting


@pytest.fixture
def site(site_template, tmp_path, monkeypatch):
    template, teams, job, names = site_template
    data = tmp_path / "data"
    relocate(template, data)
    db = data / "emoscope.duckdb"
    monkeypatch.setenv("EMOSCOPE_CONFIG", str(data / "emoscope.toml"))
    shared = Store(db).query("SELECT session_id, source_path FROM sessions "
                             "WHERE customer_id = 'c-shared' ORDER BY session_id")
    waiting, other = (data / "inbox" / n for n in names)
    assert waiting.exists() and other.exists()
    exports = [sorted((data / "exports" / name).glob("*.csv")) for name in ("all", "one")]
    assert all(exports)  # the per-session and the segment CSV of each
    return {"db": db, "data": data, "teams": {t: list(v) for t, v in teams.items()},
            "shared": shared, "job": job, "waiting": waiting, "other": other,
            "exports": exports}


def counts(db, sessions) -> dict[str, int]:
    s = Store(db)
    return {t: int(s.query(f"SELECT count(*) n FROM {t} WHERE list_contains(?, session_id)",
                           [list(sessions)]).n[0]) for t in TABLES}


def test_forget_a_customer_removes_rows_recordings_jobs_and_exports(site):
    db, shared = site["db"], site["shared"]
    ids = list(shared.session_id)
    before_other = Reader(Store(db), operator()).n_sessions()
    assert all(counts(db, ids)[t] for t in ("sessions", "segments", "frames"))
    # A folder a worker watched with --inbox (its heartbeat is there): erasure finds it too.
    drop = site["data"] / "uploads" / "drop"
    mine = inbox.put(drop, "later.wav", b"RIFF", {"customer_id": "c-shared"})
    theirs = inbox.put(drop, "else.wav", b"RIFF", {"customer_id": "c-a1"})
    inbox.beat(drop)
    res = CliRunner().invoke(app, ["forget", "--db", str(db), "--customer", "c-shared", "--yes"])
    assert res.exit_code == 0, res.output
    assert set(counts(db, ids).values()) == {0}
    assert Reader(Store(db), operator()).n_sessions() == before_other - len(ids)
    for path in shared.source_path:
        assert not os.path.exists(path)
    assert not (site["data"] / "failed" / f"{site['job']}.wav").exists()
    assert not site["waiting"].exists() and not inbox.sidecar_of(site["waiting"]).exists()
    assert site["other"].exists()  # someone else's upload stays
    assert not mine.exists() and not inbox.sidecar_of(mine).exists() and theirs.exists()
    holding, not_holding = site["exports"]
    assert len(holding) == len(not_holding) == 2
    assert not any(f.exists() for f in holding) and all(f.exists() for f in not_holding)
    assert Store(db).query("SELECT count(*) n FROM jobs").n[0] == 0
    assert not list((site["data"] / "erasures").glob("*.json"))
    rows = audit.read(Store(db), audit.AuditLog.beside(db), ADMIN, action="erase")
    key = secret(db)
    assert len(rows) == 1 and rows.target[0] == f"customer {pseudonym(key, 'c-shared')}"
    assert "c-shared" not in rows.target[0] + rows.detail[0]
    assert set(json.loads(rows.detail[0])["sessions"]) == {pseudonym(key, s) for s in ids}


def test_forget_one_session(site):
    db, teams = site["db"], site["teams"]
    sid, kept = teams["B"][0], teams["A"][0]
    spool = notes.spool_dir(db)
    for s_ in (sid, kept):  # a stored note on each, and one still pending on the erased one
        notes.put(spool, s_, "Dr Lee", f"stored note on {s_}")
    assert notes.fold(Store(db), spool)[0] == 2
    pending = notes.put(spool, sid, "Dr Lee", "written while the erasure was planned")
    fixes = corrections.spool_dir(db)
    first = Store(db).query("SELECT session_id, min(segment_id) AS seg FROM segments "
                            "WHERE list_contains(?, session_id) GROUP BY 1", [[sid, kept]])
    for s_, seg in zip(first.session_id, first.seg):  # a stored correction on each
        corrections.put(fixes, seg, s_, "sad", "Dr Lee")
    assert corrections.fold(Store(db), fixes)[0] == 2
    waiting = corrections.put(fixes, first.seg[first.session_id == sid].iloc[0], sid, "happy",
                              "Dr Lee")
    res = CliRunner().invoke(app, ["forget", "--db", str(db), "--session", sid, "--yes"])
    assert res.exit_code == 0, res.output
    assert set(counts(db, [sid]).values()) == {0}
    left = Store(db).query("SELECT session_id FROM notes").session_id.tolist()
    assert left == [kept]  # notes outlive a re-analysis, not an erasure
    assert not (spool / f"{pending['note_id']}.json").exists()
    assert Store(db).query("SELECT session_id FROM corrections").session_id.tolist() == [kept]
    assert not (fixes / f"{waiting['correction_id']}.json").exists()
    assert all(counts(db, [s])["sessions"] for s in teams["A"] + teams["W"])
    res = CliRunner().invoke(app, ["forget", "--db", str(db), "--session", sid, "--yes"])
    assert res.exit_code == 1 and "nothing stored" in res.output


@pytest.mark.parametrize("step", ["marked", "files", "rows"])
def test_a_crash_at_any_step_is_finished_by_running_forget_again(site, monkeypatch, step):
    db, shared = site["db"], site["shared"]
    ids = list(shared.session_id)

    def crash(at):
        if at == step:
            raise KeyboardInterrupt(f"power cut after {at}")
    monkeypatch.setattr(erasure, "crash_point", crash)
    with pytest.raises(KeyboardInterrupt):
        erasure.erase(Store(db), "customer", "c-shared", operator())
    assert list((site["data"] / "erasures").glob("*.json"))  # the mark survived the crash
    monkeypatch.setattr(erasure, "crash_point", lambda at: None)
    res = CliRunner().invoke(app, ["forget", "--db", str(db)])
    assert res.exit_code == 0 and "finished erasure" in res.output, res.output
    assert set(counts(db, ids).values()) == {0}
    assert not any(os.path.exists(p) for p in shared.source_path)
    assert not list((site["data"] / "erasures").glob("*.json"))
    rows = audit.read(Store(db), audit.AuditLog.beside(db), ADMIN, action="erase")
    assert len(rows) == 1  # resumed, not recorded twice


def test_an_erasure_reports_its_steps_in_order_to_a_hook(site):
    db, ids = site["db"], sorted(site["shared"].session_id)
    seen = []
    p = erasure.erase(Store(db), "customer", "c-shared", operator(),
                      hook=lambda step, artefact=None, **progress: seen.append(
                          (step, artefact, progress)))
    assert list(dict.fromkeys(step for step, _, _ in seen)) == [
        "sessions", "recordings", "job files", "exports", "shards", "spools", "uploads",
        "planned", "marked", "noted", "files", "rows", "index", "compacted"]
    found = {step: artefact for step, artefact, _ in seen}
    assert found["sessions"] == ids and found["planned"] is p and found["rows"] == ids
    assert found["recordings"] and found["job files"]  # each step reports what it found
    counted = [progress for step, _, progress in seen if progress]
    assert p.files and counted == [{"completed": n, "total": len(p.files)}
                                   for n in range(1, len(p.files) + 1)]
    assert set(counts(db, ids).values()) == {0}


def test_the_worker_carries_out_requests_and_retention(site, model):
    from ingest.worker import Worker, default_config
    from tests.store_fixtures import writer_for
    db, data, teams = site["db"], site["data"], site["teams"]
    admin_request = erasure.request(db, "session", teams["W"][0], ADMIN)
    assert (admin_request.stat().st_mode & 0o777) == 0o600
    old, old_failed = data / "archive" / "old-upload.wav", data / "failed" / "old-bad.bin"
    fresh = data / "failed" / "new-bad.bin"
    for f in (old, old_failed, fresh):
        f.write_bytes(b"RIFF")
    for f in (old, old_failed):
        os.utime(f, (time.time() - 40 * 86400,) * 2)
    # Sessions recorded in November 2026 (the fixture's dates) are kept 30 days from "now".
    days = (time.time() - time.mktime((2026, 11, 5, 0, 0, 0, 0, 0, -1))) / 86400
    staging = db.with_name(db.name + ".shards")  # Ray shards of every session: retention too
    for i, r in enumerate(results(data / "shard-audio")):
        shards.write_shard(staging, f"k{i:02d}", r, {"run": "r1", "position": i})
    cfg = default_config(db, retention=Retention(audio_days=30, data_days=days))
    w = Worker(writer_for(db), model, cfg, echo=lambda line: None)
    w.start()
    w.chores(force=True)
    assert not admin_request.exists()
    assert counts(db, [teams["W"][0]])["sessions"] == 0
    assert not old.exists() and not old_failed.exists() and fresh.exists()
    left = Reader(Store(db), operator()).session_rows()
    # Team A's calls (2-4 Nov) are past it; team B's (5-6 Nov) are not.
    assert set(left.session_id) == set(teams["B"])
    assert {r["session_id"] for f in (staging / "sessions").glob("*.parquet")
            for r in pq.read_table(f).to_pylist()} == set(teams["B"])
    rows = audit.read(Store(db), audit.AuditLog.beside(db), ADMIN, action="erase")
    assert {"session", "retention", "audio"} <= {json.loads(d)["kind"] for d in rows.detail}
    assert "boss@example.com" in set(rows.who) and "retention" in set(rows.who)
