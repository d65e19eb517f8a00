"""The audit: every act is spooled durably before it happens, folded by the writer without
loss or duplicates (concurrent appenders, folds cut short), readable by admins only and with
`emoscope audit --since`; appending never waits for the database."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.storage import audit
from core.guard.access import Viewer, operator
from core.storage.store import Store
from tests.scope_fixtures import ADMIN, SUP_A

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "data" / "emoscope.duckdb")
    s.migrate()
    return s


def test_an_act_is_spooled_privately_then_folded_once(store):
    log = audit.AuditLog.beside(store.path)
    row = log.record(SUP_A, "play", "s123", {"why": "review"})
    assert (log.folder.stat().st_mode & 0o777) == 0o700
    assert (log.spool.stat().st_mode & 0o777) == 0o600
    assert json.loads(log.spool.read_text())["audit_id"] == row["audit_id"]
    assert log.fold(store) == 1 and not log.spool.exists()
    got = audit.read(store, log, ADMIN)
    assert got[["who", "roles", "action", "target"]].values.tolist() == \
        [["lead-a@example.com", "supervisor", "play", "s123"]]
    assert json.loads(got.detail[0]) == {"why": "review"}
    assert log.fold(store) == 0 and len(audit.read(store, log, ADMIN)) == 1


def test_only_admins_read_the_audit(store):
    log = audit.AuditLog.beside(store.path)
    with pytest.raises(PermissionError):
        audit.read(store, log, SUP_A)


def test_a_fold_cut_short_is_finished_by_the_next_without_duplicates(store):
    log = audit.AuditLog.beside(store.path)
    for i in range(3):
        log.record(SUP_A, "view", f"s{i}")
    # Crash after the rows went in but before the folded file was deleted:
    log.spool.rename(log.folder / "folding-1.jsonl")
    with store.write() as con:
        audit.insert(con, audit._parse((log.folder / "folding-1.jsonl").read_bytes()))
    log.record(SUP_A, "view", "s3")  # and more acts since
    # Unfolded lines are visible to readers already; then the fold completes, once each.
    assert len(audit.read(store, log, ADMIN)) == 4
    assert log.fold(store) == 4
    assert sorted(audit.read(store, log, ADMIN).target) == ["s0", "s1", "s2", "s3"]
    assert not list(log.folder.glob("*.jsonl"))


APPENDER = """
import sys
from core.storage.audit import AuditLog
log = AuditLog(__import__("pathlib").Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    log.record(sys.argv[2], "view", f"{sys.argv[2]}-{i}")
"""


def test_concurrent_appenders_and_folds_lose_and_repeat_nothing(store):
    log = audit.AuditLog.beside(store.path)
    n, procs = 100, 3
    workers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(log.folder), f"p{k}",
                                 str(n)], cwd=ROOT) for k in range(procs)]
    folds = 0
    while any(w.poll() is None for w in workers):
        log.fold(store)
        folds += 1
        time.sleep(0.01)
    assert all(w.returncode == 0 for w in workers)
    log.fold(store)
    got = audit.read(store, log, ADMIN)
    assert folds > 3
    assert len(got) == n * procs and got.audit_id.is_unique
    assert set(got.target) == {f"p{k}-{i}" for k in range(procs) for i in range(n)}


def test_appending_never_waits_for_the_database(store):
    log = audit.AuditLog.beside(store.path)
    held = threading.Event()
    release = threading.Event()

    def writer():
        with store.write():
            held.set()
            release.wait(10)
    t = threading.Thread(target=writer)
    t.start()
    held.wait(10)
    t0 = time.perf_counter()
    for i in range(20):
        log.record(SUP_A, "view", f"s{i}")
    took = time.perf_counter() - t0
    release.set()
    t.join()
    assert took < 2.0  # twenty fsync'd appends while the writer held the store
    assert len(log.spooled()) == 20


def test_an_unwritable_audit_refuses_the_act(tmp_path):
    blocked = tmp_path / "audit"
    blocked.write_text("not a folder")
    with pytest.raises(audit.AuditError, match="cannot be written"):
        audit.AuditLog(blocked).record(SUP_A, "play", "s1")


def test_emoscope_audit_since_lists_newest_first(store):
    from cli.main import app
    log = audit.AuditLog.beside(store.path)
    old = audit.entry(Viewer("old@example.com"), "view", "s-old")
    old["at"] = "2026-01-02T10:00:00"
    with store.write() as con:
        audit.insert(con, [old])
    log.record(SUP_A, "export", "3 sessions")
    log.record(operator(), "erase", "s9")
    res = CliRunner().invoke(app, ["audit", "--db", str(store.path), "--since", "2026-06-01"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and "erase" in lines[0] and "export" in lines[1]
    assert "old@example.com" not in res.stdout
    res = CliRunner().invoke(app, ["audit", "--db", str(store.path), "--json"])
    assert [json.loads(x)["target"] for x in res.stdout.splitlines()][-1] == "s-old"
    assert not log.spool.exists()  # the command folded the spool (no worker was running)
    res = CliRunner().invoke(app, ["audit", "--db", str(store.path), "--since", "yesterday-ish"])
    assert res.exit_code == 2
