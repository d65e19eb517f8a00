"""The audit: who viewed, played, searched, exported, uploaded or erased what, and who signed in.

Readers (the dashboard, the API) never write to the database — DuckDB admits one writing
process, the worker — so an act is first appended as one JSON line to a spool file beside the
database (`audit/audit.jsonl`, 0600, fsync'd before the act is carried out: if the line cannot
be written the act is refused). The writer folds the spool into the `audit` table: it renames
the spool aside, waits for appends already under way (each holds a shared lock on the file
while it writes), inserts the rows by their id (so a fold cut short and redone adds nothing
twice) and deletes the file. Appending never touches the database, so it never blocks the
writer; reading the audit reads the table and whatever is still in the spool.
"""
from __future__ import annotations

import fcntl
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.access import Viewer
from core.private import private_dir
from core.store import Connection, Store
from core.times import as_timestamp, utc_now

ACTIONS = ("sign-in", "view", "play", "export", "upload", "erase", "erase-request", "denied",
           "api-key", "search")
SPOOL = "audit.jsonl"
COLUMNS = ["audit_id", "at", "who", "roles", "action", "target", "detail"]


class AuditError(Exception):
    """The audit line could not be written, so the act it records must not happen."""


def audit_dir(db: str | Path) -> Path:
    """The spool folder: audit/ beside the database file."""
    return Path(db).resolve().parent / "audit"


def entry(who: Viewer | str, action: str, target: str | None = None,
          detail: dict | None = None) -> dict:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    viewer = who if isinstance(who, Viewer) else None
    return {"audit_id": uuid.uuid4().hex, "at": utc_now().isoformat(timespec="microseconds"),
            "who": viewer.who if viewer else str(who),
            "roles": ",".join(sorted(viewer.roles)) if viewer else "",
            "action": action, "target": None if target is None else str(target)[:500],
            "detail": detail or {}}


def insert(con: Connection, rows: list[dict]) -> None:
    """Audit rows on the caller's transaction (erasure writes its own record this way, in the
    transaction that deletes)."""
    if rows:
        con.executemany("INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [[r["audit_id"], as_timestamp(r["at"]), r["who"], r.get("roles", ""),
                          r["action"], r.get("target"),
                          json.dumps(r.get("detail") or {}, ensure_ascii=False)] for r in rows])


@dataclass(frozen=True)
class AuditLog:
    folder: Path

    @classmethod
    def beside(cls, db: str | Path) -> "AuditLog":
        return cls(audit_dir(db))

    @property
    def spool(self) -> Path:
        return self.folder / SPOOL

    # -- appending (any process) --------------------------------------------------------------
    def record(self, who: Viewer | str, action: str, target: str | None = None,
               detail: dict | None = None) -> dict:
        """Append one act, durably; AuditError when it cannot be written."""
        row = entry(who, action, target, detail)
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        try:
            private_dir(self.folder)
            for _ in range(100):
                fd = os.open(self.spool, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    try:
                        same = os.fstat(fd).st_ino == os.stat(self.spool).st_ino
                    except FileNotFoundError:
                        same = False
                    if not same:  # renamed aside for folding between our open and our lock
                        continue
                    os.write(fd, data)
                    os.fsync(fd)
                    return row
                finally:
                    os.close(fd)
        except OSError as e:
            raise AuditError(f"the audit log at {self.folder} cannot be written "
                             f"({e.strerror or e})") from e
        raise AuditError(f"the audit log at {self.folder} kept moving; try again")

    # -- folding (the writer) ------------------------------------------------------------------
    def _pending(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("folding-*.jsonl"))

    def fold(self, store: Store) -> int:
        """Move every spooled line into the audit table; returns how many lines were read."""
        if self.spool.exists():
            os.replace(self.spool, self.folder / f"folding-{utc_now():%Y%m%d%H%M%S%f}-"
                                                 f"{uuid.uuid4().hex[:6]}.jsonl")
        n = 0
        for f in self._pending():
            fd = os.open(f, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # appends that opened it before the rename end
                rows = _parse(f.read_bytes())
            finally:
                os.close(fd)
            with store.write() as con:
                insert(con, rows)
            f.unlink()
            n += len(rows)
        return n

    # -- reading (admins) ------------------------------------------------------------------------
    def spooled(self) -> list[dict]:
        """Lines not yet folded (a line being written right now is left for the next look)."""
        rows = []
        for f in [*self._pending(), self.spool]:
            try:
                rows += _parse(f.read_bytes())
            except FileNotFoundError:
                continue
        return rows


def _parse(data: bytes) -> list[dict]:
    rows = []
    for line in data.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write: the act it named was not carried out
        if isinstance(row, dict) and row.get("audit_id") and row.get("action"):
            rows.append(row)
    return rows


def read(store: Store, log: AuditLog, viewer: Viewer, since=None,
         action: str | None = None) -> pd.DataFrame:
    """The audit from `since` on, newest first: the table and what is still spooled. Admins only."""
    if not viewer.is_admin:
        raise PermissionError("only an admin may read the audit")
    since_ts = as_timestamp(since)
    frames = []
    if store.exists():
        try:
            frames.append(store.query(
                "SELECT audit_id, happened_at AS at, who, roles, action, target, detail "
                "FROM audit WHERE happened_at >= coalesce(?, happened_at) "
                "AND action = coalesce(?, action)", [since_ts, action]))
        except Exception as e:  # a store from before the audit migration: only the spool
            if "audit" not in str(e):
                raise
    spool = pd.DataFrame(log.spooled(), columns=COLUMNS)
    if len(spool):
        spool["at"] = pd.to_datetime(spool["at"])
        spool["detail"] = [json.dumps(d, ensure_ascii=False) for d in spool.detail]
        if since_ts is not None:
            spool = spool[spool["at"] >= pd.Timestamp(since_ts)]
        if action:
            spool = spool[spool.action == action]
        frames.append(spool)
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True).drop_duplicates("audit_id")
    out["at"] = pd.to_datetime(out["at"])
    return out.sort_values("at", ascending=False).reset_index(drop=True)
