"""Erasure reaches every copy (issue 23, items 1 and 4): Ray shards are deleted and never
imported again (an erased list of keyed pseudonyms), the DuckDB file keeps no erased value in
its free blocks, and the audit names people only by keyed pseudonyms, rewritten on erasure."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from core.storage import audit
from core.admin import erasure
from core.intake import shards
from core.guard.access import operator
from core.base.keyed import pseudonym, secret
from core.storage.store import Store
from tests.scope_fixtures import ADMIN, SUP_A, results
from tests.test_erasure import site, site_template  # noqa: F401  (the fixtures)


def grep(folder: Path, needle: bytes) -> list[str]:
    """Every file under `folder` whose bytes hold `needle` (as `grep -ra` would list them)."""
    return sorted(str(f.relative_to(folder)) for f in folder.rglob("*")
                  if f.is_file() and needle in f.read_bytes())


def write_shards(where: Path, archive: Path) -> None:
    for i, r in enumerate(results(archive)):
        shards.write_shard(where, f"k{i:02d}", r, {"run": "r1", "position": i})


def test_forget_reaches_shards_audit_and_the_database_file(site, tmp_path):
    db, data = site["db"], site["data"]
    shared = list(site["shared"].session_id)
    staging = db.with_name(db.name + ".shards")  # Ray's default staging folder
    write_shards(staging, tmp_path / "audio")
    kept_copy = tmp_path / "copied-away"
    shutil.copytree(staging, kept_copy)
    log = audit.AuditLog.beside(db)  # earlier records naming the subject
    log.record(ADMIN, "view", shared[0])
    log.record(ADMIN, "export", "2 sessions", {"files": ["/x/person-c-shared_all.csv"],
                                              "sessions": shared})
    assert grep(data, b"c-shared")  # database, shards, jobs, audit, inbox
    res = CliRunner().invoke(app, ["forget", "--db", str(db), "--customer", "c-shared", "--yes"])
    assert res.exit_code == 0, res.output
    # Nothing beside the store holds it any more: not the shards, not the audit, and not the
    # DuckDB file's free blocks (the store was compacted into a fresh file).
    assert grep(data, b"c-shared") == []
    assert not db.with_name(db.name + ".wal").exists() and not list(data.glob(".*.compact*"))
    assert len(list((staging / "sessions").glob("*.parquet"))) == 6 - 2  # the others stay
    assert Store(db).migrate() == []  # the compacted file has the whole schema
    rows = audit.read(Store(db), log, operator())
    text = " ".join(rows.target.fillna("")) + " ".join(rows.detail)
    assert not any(s in text for s in shared)
    assert pseudonym(secret(db), shared[0]) in set(rows.target)  # still matchable, keyed
    assert "/x/person-hmac:" in text  # the path of a deleted export, its subject pseudonymous
    # An old copy of the shards, imported again: the erased sessions are refused, by name.
    res = CliRunner().invoke(app, ["import", str(kept_copy), "--db", str(db), "--force"])
    assert res.exit_code == 1 and "erased from this store" in res.output, res.output
    assert Store(db).query("SELECT count(*) n FROM sessions WHERE customer_id = 'c-shared'"
                           ).n[0] == 0
    line = (data / "erasures" / erasure.ERASED).read_text()
    assert "c-shared" not in line and not any(s in line for s in shared)


def test_audit_names_people_by_a_keyed_pseudonym_not_a_guessable_hash(tmp_path):
    db = tmp_path / "data" / "emoscope.duckdb"
    log = audit.AuditLog.beside(db)
    log.record(SUP_A, "view", "3 of 3 sessions", {"sessions": ["s1"], "filters": {
        "person": "c-1042", "q": "Refund  for C-1042 please", "team": "A"}})
    log.record(SUP_A, "export", "1 sessions", {
        "delivered": "person-c-1042_2026-11-01_2026-11-14.pdf", "filters": {"person": "c-1042"},
        "scope": "Person c-1042 · 2026-11-01 to 2026-11-14 · 1 session."})
    spool = log.spool.read_bytes()
    assert b"c-1042" not in spool and b"Refund" not in spool
    key = secret(db)
    assert (db.parent / "access" / "store.key").stat().st_mode & 0o777 == 0o600
    rows = [json.loads(line) for line in spool.splitlines()]
    assert rows[0]["detail"]["filters"]["person"] == pseudonym(key, "c-1042")
    assert rows[0]["detail"]["filters"]["q"] == pseudonym(key, "refund for c-1042 please",
                                                          text=True)
    assert rows[0]["detail"]["filters"]["team"] == "A"  # not a person: kept as it is
    assert rows[1]["detail"]["delivered"].startswith("person-hmac:")
    # The attack: every id of the scheme, hashed, matches nothing without the key.
    text = spool.decode()
    for n in range(10_000):
        digest = hashlib.sha256(f"c-{n:04d}".encode()).hexdigest()
        assert digest[:16] not in text and digest[:24] not in text

