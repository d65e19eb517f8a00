"""What an erasure removes: the plan, found before anything is changed.

Every copy of a session, a customer's or a person's sessions (or, for retention, the sessions
older than a cutoff) is looked for in turn, each a named step: the rows, the recordings, the
jobs' files in every inbox, archive and failed folder, the exports holding them, the Ray
shards, the spooled notes and corrections, and the uploads still waiting. Each step is
reported to an optional hook with what it found. core.admin.erasure carries the plan out.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from core.base import places
from core.base.keyed import pseudonym, secret
from core.base.times import utc_now
from core.guard.access import Viewer
from core.intake import shards
from core.intake.inbox import HEARTBEAT, entry, read_sidecar, sidecar_of, waiting
from core.storage import corrections, notes
from core.storage.store import Connection, Store

KINDS = ("session", "customer", "person", "retention")


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
# A step's report, as pyannote.audio's pipelines report theirs: hook(step, artefact), and a long
# step also hook(step, artefact, completed=, total=) as it goes. The CLI shows them as progress.
Hook = Callable[..., None]


def quiet(step: str, artefact=None, **progress) -> None:
    pass


@dataclass
class _Stored:
    """What the store holds about an erasure's sessions, read in one transaction."""
    rows: list = field(default_factory=list)  # (session_id, source_path, sha256)
    jobs: list = field(default_factory=list)  # (job_id, inbox name)
    exports: list = field(default_factory=list)  # (audit detail of an export,)


def plan(store: Store, kind: str, value: str | None, who: Viewer | str,
         older_than_days: float | None = None, include_sources: bool = False,
         hook: Hook | None = None) -> Plan:
    """What erasing `kind`=`value` removes; nothing is changed yet. Every copy is looked for
    in turn, each step reported to `hook` with the files it found."""
    _check_request(kind, value)
    report = hook or quiet
    db = store.path.resolve()
    p = _blank_plan(db, kind, value, who, older_than_days)
    customer = value if kind in ("customer", "person") else None
    cutoff = _cutoff(older_than_days) if kind == "retention" else None
    stored = _stored_rows(store, p, kind, value, cutoff)
    report("sessions", p.session_ids)
    files = _step(report, "recordings",
                  _recordings(db, stored.rows, include_sources, p.left_in_place))
    files |= _step(report, "job files", _job_files(db, stored.jobs))
    files |= _step(report, "exports", _exports_holding(stored.exports, set(p.session_ids)))
    files |= _step(report, "shards", _shards_of(store, p, customer, cutoff))
    files |= _step(report, "spools", _spooled(db, p.session_ids))
    files |= _step(report, "uploads", _waiting_uploads(db, customer))
    p.files = sorted(str(f) for f in files if f.exists() or f.is_symlink())
    report("planned", p)
    return p


def _step(report: Hook, step: str, found: set[Path]) -> set[Path]:
    report(step, found)
    return found


def _check_request(kind: str, value: str | None) -> None:
    if kind not in KINDS:
        raise ErasureError(f"erase what? one of {', '.join(KINDS)}, not {kind!r}")
    if kind != "retention" and not value:
        raise ErasureError(f"--{kind} needs an id")


def _blank_plan(db: Path, kind: str, value: str | None, who: Viewer | str,
                older_than_days: float | None) -> Plan:
    """The plan's name, target (pseudonymous) and who asked; nothing found yet."""
    viewer = who if isinstance(who, Viewer) else None
    target = f"older than {older_than_days or 0:g} days" if kind == "retention" \
        else f"{kind} {hashed(db, value)}"
    return Plan(uuid.uuid4().hex[:12], kind, target, viewer.who if viewer else str(who),
                ",".join(sorted(viewer.roles)) if viewer else "",
                planned_at=utc_now().isoformat(),
                subject=[value] if kind != "retention" and value else [])


def _cutoff(older_than_days: float | None):
    return utc_now() - timedelta(days=float(older_than_days or 0))


def _stored_rows(store: Store, p: Plan, kind: str, value: str | None, cutoff) -> _Stored:
    """The sessions erased (with their segments, recordings' hashes and jobs) into `p`, and
    the rows that point at their files."""
    if not store.exists():
        return _Stored()
    if kind == "session":
        cond, params = "s.session_id = ?", [value]
    elif kind in ("customer", "person"):
        cond, params = "s.customer_id = ?", [value]
    else:
        cond, params = "coalesce(s.recorded_at, s.ingested_at) < ?", [cutoff]
    by_customer = kind in ("customer", "person")
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
            + (" OR json_extract_string(metadata, '$.customer_id') = ?" if by_customer else ""),
            [p.session_ids] + ([value] if by_customer else [])
        ).fetchall() if has_table(con, "jobs") else []
        p.job_ids = sorted(j[0] for j in jobs)
        exports = con.execute(
            "SELECT detail FROM audit WHERE action = 'export'").fetchall() \
            if has_table(con, "audit") else []
    return _Stored(rows, jobs, exports)


def _recordings(db: Path, rows: list, include_sources: bool, left_in_place: list[str]
                ) -> set[Path]:
    """The sessions' recordings the product owns (or all, `include_sources`); the others are
    named in `left_in_place`."""
    roots, found = places.owned(db), set()
    for _, source, _ in rows:
        src = Path(str(source))
        if not src.is_absolute():
            continue  # relative to an audio root: the operator's share, not ours
        if _inside(src, roots) or include_sources:
            found.add(src)
        elif src.exists():
            left_in_place.append(str(src))
    return found


def _job_files(db: Path, jobs: list) -> set[Path]:
    """The jobs' files in every inbox, archive and failed folder: named by job id or by the
    inbox name (the jobs table's key for the name, core.intake.inbox.key_of)."""
    found: set[Path] = set()
    for job_id, inbox_name in jobs:
        for root in dict.fromkeys([*inboxes(db), *places.owned(db)[1:3]]):
            found.update(root.glob(f"{job_id}.*"))
            if inbox_name:
                f = entry(root, inbox_name)
                found.update([f, sidecar_of(f)])
    return found


def _exports_holding(exports: list, wanted: set[str]) -> set[Path]:
    """Files written by `emoscope export` that hold one of these sessions."""
    found: set[Path] = set()
    for (detail,) in exports:
        try:
            d = json.loads(detail) if isinstance(detail, str) else (detail or {})
        except ValueError:
            continue
        if wanted & set(d.get("sessions") or ()):
            found.update(Path(f) for f in d.get("files") or ())
    return found


def _shards_of(store: Store, p: Plan, customer: str | None, cutoff) -> set[Path]:
    """Ray shards of these sessions, in every staging folder this store was fed from."""
    found: set[Path] = set()
    if store.exists():
        for folder in staging_folders(store):
            found.update(shards.matching(folder, set(p.session_ids), set(p.audio), customer,
                                         cutoff))
    return found


def _spooled(db: Path, session_ids: list[str]) -> set[Path]:
    """Notes and corrections about these sessions that the worker has not stored (or rejected)."""
    return {*notes.files_for(notes.spool_dir(db), session_ids),
            *corrections.files_for(corrections.spool_dir(db), session_ids)}


def _waiting_uploads(db: Path, customer: str | None) -> set[Path]:
    """Files of this person still waiting in an inbox: they would be analysed again."""
    found: set[Path] = set()
    for box in inboxes(db) if customer else ():
        for f in waiting(box):
            _, meta, _ = read_sidecar(f)
            if meta.get("customer_id") == customer:
                found.update([f, sidecar_of(f)])
    return found


def staging_folders(store: Store) -> list[Path]:
    """Local folders that hold Ray shards of this store: `<db>.shards` (the default) and every
    folder a run was imported from (runs.options.imported_from). Object-store URLs are left to
    their bucket's own lifecycle rules: named in the README."""
    db = store.path.resolve()
    found = {places.beside(db, places.SHARDS)}
    if store.exists():
        with store.read() as con:
            if has_table(con, "runs"):
                for (where,) in con.execute(
                        "SELECT DISTINCT json_extract_string(options, '$.imported_from') "
                        "FROM runs WHERE options IS NOT NULL").fetchall():
                    if where and "://" not in where:
                        found.add(Path(where))
    return sorted(f for f in found if f.is_dir())


def has_table(con: Connection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchone()[0])
