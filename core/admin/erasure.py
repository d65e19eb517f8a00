"""Erasure and retention: a session, a customer or a person removed everywhere the product
keeps them — rows, recordings, exports, Ray shards, the audit's mentions, the index, and the
database file's free blocks — in steps a crash cannot leave half done.

An erasure is planned (which sessions, segments, jobs and files), written to a journal file
(`erasures/<id>.json`, fsync'd: the mark), and its sessions' and recordings' pseudonyms are
added to the erased list (`erasures/erased.jsonl`, core.base.keyed: so `emoscope import` refuses
shards of them for good). Then its files are deleted (recordings, exports, shards), then its
rows go, earlier audit records naming it are rewritten and its own audit record is written,
in one transaction; then derived indexes forget it, the database is compacted into a fresh
file (DuckDB leaves deleted values readable in free blocks), and the journal is deleted.
Every step is idempotent, so `resume_pending` — run by `emoscope forget` and by the worker —
finishes any erasure a crash interrupted. Only the writing process erases (the worker, or the
CLI when no worker runs); the dashboard files a request that the worker carries out.

The plan is found by core.admin.erasure_plan; `execute` reads as its steps, each reported to an
optional hook when done (the CLI's progress line).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Callable

# Planning lives in core.admin.erasure_plan; its public names are erasure's too.
from core.admin.erasure_plan import (KINDS, ErasureError, Hook, Plan, has_table, hashed,  # noqa: F401
                                     inboxes, journal_dir, plan, quiet, staging_folders)
from core.admin.settings import Retention
from core.base import places
from core.base.keyed import pseudonym, secret
from core.base.private import private_dir, write_atomic
from core.base.times import utc_now
from core.guard.access import Viewer
from core.intake.inbox import HEARTBEAT
from core.storage import audit
from core.storage.sessions import delete_session
from core.storage.store import Store

OWNED = places.OWNED  # folders beside the store the product owns (core/base/places)


ERASED = "erased.jsonl"


def erased(db: str | Path) -> set[str]:
    """Pseudonyms of every session and recording (SHA-256) ever erased from this store."""
    out: set[str] = set()
    try:
        lines = (journal_dir(db) / ERASED).read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            body = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: it is written again when the erasure resumes
        out.update(body.get("sessions") or ())
        out.update(body.get("audio") or ())
    return out


def _note_erased(db: Path, p: Plan) -> None:
    """Add the plan's sessions and recordings to the erased list (fsync'd, before anything is
    deleted: an import racing the erasure is refused too)."""
    if not (p.session_ids or p.audio):
        return
    key = secret(db)
    line = json.dumps({"erasure_id": p.erasure_id, "at": p.planned_at,
                       "sessions": [pseudonym(key, s) for s in p.session_ids],
                       "audio": [pseudonym(key, a) for a in p.audio]}) + "\n"
    folder = private_dir(journal_dir(db))
    fd = os.open(folder / ERASED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


# -- carrying out -----------------------------------------------------------------------------
def after_rows_erased(db: Path, session_ids: list[str], segment_ids: list[str]) -> None:
    """The indexes derived from the store and kept beside it forget the erased rows: the ANN
    index files (core.index.segment_index), so an erased segment never comes back as a neighbour, and
    the word index (core.index.word_index), so an erased sentence is never found again.
    Called after an erasure's rows are gone, and again when a journal is resumed: removing keys
    no longer held does nothing, so it is idempotent. Should it fail, the index no longer
    matches the store and is rebuilt before any search uses it."""
    if session_ids:  # the transcripts' word index: merged and vacuumed, no erased word left
        from core.index import word_index
        if word_index.path_of(db).is_file():
            word_index.sync(Store(db), erased=True)
    if segment_ids:
        from core.index import segment_index
        from core.storage.vector_keys import keys_for
        segment_index.forget(Store(db), keys_for(segment_ids))


# Tests set this to crash between steps; production never does.
crash_point: Callable[[str], None] = lambda step: None


def execute(store: Store, p: Plan, hook: Hook | None = None) -> Plan:
    """Carry out a plan, each step reported to `hook` when done (the file deletions also as
    they go). Safe to run again on the same plan: every step is idempotent."""
    report = hook or quiet
    db = store.path.resolve()
    mark = _mark(store, p)
    _done("marked", report, mark)
    _note_erased(db, p)
    _done("noted", report, p.session_ids)
    _delete_files(p.files, report)
    _done("files", report, p.files)
    _delete_rows(store, db, p)
    _done("rows", report, p.session_ids)
    after_rows_erased(db, p.session_ids, p.segment_ids)
    _done("index", report, p.segment_ids)
    _unmark(store, p, mark)
    if p.compact:
        report("compacted", compact_if_due(store))
    return p


def _done(step: str, report: Hook, artefact) -> None:
    report(step, artefact)
    crash_point(step)


def _mark(store: Store, p: Plan) -> Path:
    """The journal file (fsync'd) that makes a crash from here on finish the erasure."""
    mark = private_dir(journal_dir(store.path)) / f"{p.erasure_id}.json"
    write_atomic(mark, json.dumps({"state": "planned", "plan": asdict(p)}).encode())
    return mark


def _delete_files(files: list[str], report: Hook) -> None:
    for n, f in enumerate(files, 1):
        try:
            Path(f).unlink()
        except FileNotFoundError:
            pass
        report("files", f, completed=n, total=len(files))


def _delete_rows(store: Store, db: Path, p: Plan) -> None:
    """The sessions' rows, their notes, corrections and jobs, and the audit's mentions of them
    rewritten, with the erasure's own audit record, in one transaction."""
    key = secret(db)
    if not store.exists():
        return
    record = audit.entry(p.who, "erase", p.target,
                         {"kind": p.kind, "erasure_id": p.erasure_id, "roles": p.roles,
                          "sessions": [pseudonym(key, s) for s in p.session_ids],
                          "jobs": len(p.job_ids), "files": len(p.files),
                          "left_in_place": p.left_in_place})
    record["audit_id"] = f"erase-{p.erasure_id}"  # the same row however often it is resumed
    record["roles"] = p.roles
    audit.AuditLog.beside(db).fold(store)  # spooled records naming it are rewritten too
    with store.write() as con:
        for sid in p.session_ids:
            delete_session(con, sid)
        for kept in ("notes", "corrections"):  # they outlive a re-analysis, not this
            if has_table(con, kept):
                con.execute(f"DELETE FROM {kept} WHERE list_contains(?, session_id)",
                            [p.session_ids])
        if p.job_ids and has_table(con, "jobs"):
            con.execute("DELETE FROM jobs WHERE list_contains(?, job_id)", [p.job_ids])
        audit.forget_subject(con, key, p.subject, p.session_ids, p.job_ids, p.files)
        audit.insert(con, [record])


def _unmark(store: Store, p: Plan, mark: Path) -> None:
    """The journal goes; a compaction stays due (its own file) until one is done."""
    write_atomic(mark.parent / COMPACT_DUE, p.erasure_id.encode())
    mark.unlink(missing_ok=True)


COMPACT_DUE = "compact.due"


def compact_if_due(store: Store) -> dict | None:
    """Compact the database when an erasure has deleted rows since the last compaction (so
    their values leave the file's free blocks); None when none was due."""
    due = journal_dir(store.path) / COMPACT_DUE
    if not due.exists():
        return None
    if not store.exists():
        due.unlink(missing_ok=True)
        return None
    out = store.compact()
    if out is not None:  # None: another process wrote meanwhile; the next round compacts
        due.unlink(missing_ok=True)
    return out


def erase(store: Store, kind: str, value: str | None, who: Viewer | str,
          include_sources: bool = False, hook: Hook | None = None) -> Plan:
    p = plan(store, kind, value, who, include_sources=include_sources, hook=hook)
    return execute(store, p, hook)


# -- requests from the dashboard, and journals left by a crash ---------------------------------
def request(db: str | Path, kind: str, value: str, who: Viewer) -> Path:
    """An erasure asked for by an admin in the dashboard, for the writer to carry out."""
    if kind not in ("session", "customer", "person"):
        raise ErasureError(f"erase what? session, customer or person, not {kind!r}")
    if not who.is_admin:
        raise PermissionError("only an admin may erase")
    folder = private_dir(journal_dir(db))
    body = {"state": "requested", "kind": kind, "value": value, "who": who.who,
            "roles": ",".join(sorted(who.roles)), "at": utc_now().isoformat()}
    target = folder / f"request-{uuid.uuid4().hex[:12]}.json"
    write_atomic(target, json.dumps(body).encode())
    return target


def resume_pending(store: Store) -> list[Plan]:
    """Finish every erasure a crash interrupted, then carry out every request, then compact
    the database once if any deleted rows; returns them."""
    folder = journal_dir(store.path)
    if not folder.is_dir():
        return []
    done = []
    for f in sorted(folder.glob("*.json"), key=lambda x: (x.name.startswith("request-"), x.name)):
        try:
            body = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if body.get("state") == "planned":
            done.append(execute(store, Plan(**{**body["plan"], "compact": False})))
        elif body.get("state") == "requested":
            who = Viewer(body["who"], frozenset(filter(None, body.get("roles", "").split(","))))
            p = plan(store, body["kind"], body["value"], who)
            p.compact = False  # once for all of them, below
            execute(store, p)
            f.unlink(missing_ok=True)
            done.append(p)
    compact_if_due(store)
    return done


def apply_retention(store: Store, retention: Retention) -> dict:
    """Erase sessions older than data_days; delete kept recordings older than audio_days."""
    out = {"sessions": 0, "audio_files": 0}
    db = store.path.resolve()
    gone: list[str] = []
    if retention.data_days > 0 and store.exists():
        p = plan(store, "retention", None, "retention", older_than_days=retention.data_days)
        if not p.empty:
            execute(store, p)
            out["sessions"] = len(p.session_ids)
    if retention.audio_days > 0:
        cutoff = time.time() - retention.audio_days * 86400
        for root in places.owned(db)[1:3]:  # archive, failed
            if not root.is_dir():
                continue
            for f in root.iterdir():
                try:
                    if f.is_file() and f.stat().st_mtime < cutoff:
                        f.unlink()
                        gone.append(f.name)
                except OSError:
                    continue
    # Whatever sits in the inbox longer than stored audio may be kept (an entry no worker
    # took, a leftover temporary or sidecar) goes too: nothing there outlives retention.
    days = retention.audio_days or retention.data_days
    for box in inboxes(db) if days > 0 else ():
        if not box.is_dir():
            continue
        cutoff = time.time() - days * 86400
        for f in box.rglob("*"):
            try:
                if f.name != HEARTBEAT and not f.is_dir() and f.lstat().st_mtime < cutoff:
                    f.unlink()
                    gone.append(f.name)
            except OSError:
                continue
    if gone and store.exists():
        with store.write() as con:
            audit.insert(con, [audit.entry("retention", "erase",
                                           f"recordings older than {days:g} days",
                                           {"kind": "audio", "files": len(gone)})])
    out["audio_files"] = len(gone)
    return out

