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
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from core.base import places
from core.storage import audit, corrections, notes
from core.intake import shards
from core.guard.access import Viewer
from core.intake.inbox import HEARTBEAT, entry, read_sidecar, sidecar_of, waiting
from core.base.keyed import pseudonym, secret
from core.base.private import private_dir, write_atomic
from core.storage.sessions import delete_session
from core.admin.settings import Retention
from core.storage.store import Connection, Store
from core.base.times import utc_now

KINDS = ("session", "customer", "person", "retention")
OWNED = places.OWNED  # folders beside the store the product owns (core/base/places)


class ErasureError(ValueError):
    """A request that cannot be carried out (bad kind, nothing matching); one line."""


@dataclass
class Plan:
    erasure_id: str
    kind: str
    target: str  # a session id or a customer/person id, only as its pseudonym
    who: str
    roles: str
    session_ids: list[str] = field(default_factory=list)
    segment_ids: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # product-owned files to delete
    left_in_place: list[str] = field(default_factory=list)  # source recordings outside them
    planned_at: str = ""
    audio: list[str] = field(default_factory=list)  # the sessions' recordings' SHA-256
    subject: list[str] = field(default_factory=list)  # the erased id, in clear, until done
    compact: bool = True  # end by compacting the database (False: the caller does it once)

    @property
    def empty(self) -> bool:
        return not (self.session_ids or self.job_ids or self.files)


def journal_dir(db: str | Path) -> Path:
    return places.folder(db, places.ERASURES)


def hashed(db: str | Path, value: str) -> str:
    """How an erased id is named in the audit and the erased list: its keyed pseudonym."""
    return pseudonym(secret(db), value)


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


def _owned_roots(db: Path) -> list[Path]:
    return places.owned(db)


def inboxes(db: Path) -> list[Path]:
    """Every inbox of this store: inbox/ beside it, $EMOSCOPE_INBOX (where the dashboard and
    the API put uploads), and each folder of the data directory a worker has watched
    (`emoscope worker --inbox`: its heartbeat file stays there)."""
    home = places.home(db)
    found = [places.folder(db, places.INBOX)]
    chosen = os.environ.get("EMOSCOPE_INBOX")
    if chosen and _inside(Path(chosen).resolve(), [home]):
        found.append(Path(chosen).resolve())
    found += [b.parent for b in (*home.glob(f"*/{HEARTBEAT}"), *home.glob(f"*/*/{HEARTBEAT}"))]
    return list(dict.fromkeys(f for f in found if f != home))


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


# -- planning ---------------------------------------------------------------------------------
def plan(store: Store, kind: str, value: str | None, who: Viewer | str,
         older_than_days: float | None = None, include_sources: bool = False) -> Plan:
    """What erasing `kind`=`value` removes; nothing is changed yet."""
    if kind not in KINDS:
        raise ErasureError(f"erase what? one of {', '.join(KINDS)}, not {kind!r}")
    if kind != "retention" and not value:
        raise ErasureError(f"--{kind} needs an id")
    viewer = who if isinstance(who, Viewer) else None
    db = store.path.resolve()
    target = f"older than {older_than_days or 0:g} days" if kind == "retention" \
        else f"{kind} {hashed(db, value)}"
    p = Plan(uuid.uuid4().hex[:12], kind, target, viewer.who if viewer else str(who),
             ",".join(sorted(viewer.roles)) if viewer else "", planned_at=utc_now().isoformat(),
             subject=[value] if kind != "retention" and value else [])
    roots = _owned_roots(db)
    if kind == "session":
        cond, params = "s.session_id = ?", [value]
    elif kind in ("customer", "person"):
        cond, params = "s.customer_id = ?", [value]
    else:
        cutoff = utc_now() - timedelta(days=float(older_than_days or 0))
        cond, params = "coalesce(s.recorded_at, s.ingested_at) < ?", [cutoff]
    cutoff = cutoff if kind == "retention" else None
    files: set[Path] = set()
    if store.exists():
        with store.write() as con:  # the writer plans what it is about to delete
            rows = con.execute(f"SELECT session_id, source_path, sha256 FROM sessions s "
                               f"WHERE {cond}", params).fetchall()
            p.session_ids = sorted(r[0] for r in rows)
            p.audio = sorted({r[2] for r in rows if r[2]})
            p.segment_ids = [r[0] for r in con.execute(
                "SELECT segment_id FROM segments WHERE list_contains(?, session_id)",
                [p.session_ids]).fetchall()]
            jobs = con.execute(
                "SELECT job_id, file_name FROM jobs WHERE list_contains(?, session_id)"
                + (" OR json_extract_string(metadata, '$.customer_id') = ?"
                   if kind in ("customer", "person") else ""),
                [p.session_ids] + ([value] if kind in ("customer", "person") else [])
            ).fetchall() if _has_table(con, "jobs") else []
            p.job_ids = sorted(j[0] for j in jobs)
            exports = con.execute(
                "SELECT detail FROM audit WHERE action = 'export'").fetchall() \
                if _has_table(con, "audit") else []
        for _, source, _ in rows:
            src = Path(str(source))
            if not src.is_absolute():
                continue  # relative to an audio root: the operator's share, not ours
            if _inside(src, roots) or include_sources:
                files.add(src)
            elif src.exists():
                p.left_in_place.append(str(src))
        for job_id, inbox_name in jobs:
            # every inbox, archive, failed: named by job id or inbox name
            for root in dict.fromkeys([*inboxes(db), *roots[1:3]]):
                files.update(root.glob(f"{job_id}.*"))
                if inbox_name:  # the jobs table's key for the name (core.intake.inbox.key_of)
                    f = entry(root, inbox_name)
                    files.update([f, sidecar_of(f)])
        wanted = set(p.session_ids)
        for (detail,) in exports:  # exports written by `emoscope export` holding these sessions
            try:
                d = json.loads(detail) if isinstance(detail, str) else (detail or {})
            except ValueError:
                continue
            if wanted & set(d.get("sessions") or ()):
                files.update(Path(f) for f in d.get("files") or ())
        # Ray shards of these sessions, in every staging folder this store was fed from.
        for folder in staging_folders(store):
            files.update(shards.matching(folder, wanted, set(p.audio),
                                         value if kind in ("customer", "person") else None,
                                         cutoff))
    # Notes analysts left about these sessions that the worker has not stored (or rejected).
    files.update(notes.files_for(notes.spool_dir(db), p.session_ids))
    files.update(corrections.files_for(corrections.spool_dir(db), p.session_ids))
    if kind in ("customer", "person") and value:
        # Files still waiting in the inbox for this person: they would be analysed again.
        for box in inboxes(db):
            for f in waiting(box):
                _, meta, _ = read_sidecar(f)
                if meta.get("customer_id") == value:
                    files.update([f, sidecar_of(f)])
    p.files = sorted(str(f) for f in files if f.exists() or f.is_symlink())
    return p


def staging_folders(store: Store) -> list[Path]:
    """Local folders that hold Ray shards of this store: `<db>.shards` (the default) and every
    folder a run was imported from (runs.options.imported_from). Object-store URLs are left to
    their bucket's own lifecycle rules: named in the README."""
    db = store.path.resolve()
    found = {places.beside(db, places.SHARDS)}
    if store.exists():
        with store.read() as con:
            if _has_table(con, "runs"):
                for (where,) in con.execute(
                        "SELECT DISTINCT json_extract_string(options, '$.imported_from') "
                        "FROM runs WHERE options IS NOT NULL").fetchall():
                    if where and "://" not in where:
                        found.add(Path(where))
    return sorted(f for f in found if f.is_dir())


def _has_table(con: Connection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchone()[0])


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


def execute(store: Store, p: Plan) -> Plan:
    """Mark, note as erased, delete files, delete rows (rewriting the audit's mentions, with
    the erasure's own record), forget in derived indexes, compact, clear the mark. Safe to run
    again on the same plan."""
    folder = private_dir(journal_dir(store.path))
    mark = folder / f"{p.erasure_id}.json"
    write_atomic(mark, json.dumps({"state": "planned", "plan": asdict(p)}).encode())
    crash_point("marked")
    db = store.path.resolve()
    key = secret(db)
    _note_erased(db, p)
    crash_point("noted")
    for f in p.files:
        try:
            Path(f).unlink()
        except FileNotFoundError:
            pass
    crash_point("files")
    record = audit.entry(p.who, "erase", p.target,
                         {"kind": p.kind, "erasure_id": p.erasure_id, "roles": p.roles,
                          "sessions": [pseudonym(key, s) for s in p.session_ids],
                          "jobs": len(p.job_ids), "files": len(p.files),
                          "left_in_place": p.left_in_place})
    record["audit_id"] = f"erase-{p.erasure_id}"  # the same row however often it is resumed
    record["roles"] = p.roles
    if store.exists():
        audit.AuditLog.beside(db).fold(store)  # spooled records naming it are rewritten too
        with store.write() as con:
            for sid in p.session_ids:
                delete_session(con, sid)
            for kept in ("notes", "corrections"):  # they outlive a re-analysis, not this
                if _has_table(con, kept):
                    con.execute(f"DELETE FROM {kept} WHERE list_contains(?, session_id)",
                                [p.session_ids])
            if p.job_ids and _has_table(con, "jobs"):
                con.execute("DELETE FROM jobs WHERE list_contains(?, job_id)", [p.job_ids])
            audit.forget_subject(con, key, p.subject, p.session_ids, p.job_ids, p.files)
            audit.insert(con, [record])
    crash_point("rows")
    after_rows_erased(db, p.session_ids, p.segment_ids)
    crash_point("index")
    write_atomic(folder / COMPACT_DUE, p.erasure_id.encode())  # outlives the mark until done
    mark.unlink(missing_ok=True)
    if p.compact:
        compact_if_due(store)
    return p


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
          include_sources: bool = False) -> Plan:
    p = plan(store, kind, value, who, include_sources=include_sources)
    return execute(store, p)


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
        for root in _owned_roots(db)[1:3]:  # archive, failed
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

