"""The audit: who viewed, played, searched, exported, uploaded or erased what, and who signed in.

Readers (the dashboard, the API) never write to the database — DuckDB admits one writing
process, the worker — so an act is first appended as one JSON line to a spool file beside the
database (`audit/audit.jsonl`, 0600, fsync'd before the act is carried out: if the line cannot
be written the act is refused). The writer folds the spool into the `audit` table: it renames
the spool aside, waits for appends already under way (each holds a shared lock on the file
while it writes), inserts the rows by their id (so a fold cut short and redone adds nothing
twice) and deletes the file. Appending never touches the database, so it never blocks the
writer; reading the audit reads the table and whatever is still in the spool.

What a record keeps (docs/audit.md): who acted, when, with which roles, the act, and what it
touched — session ids, counts, formats, job ids. Personal identifiers in it (customer, person
and agent ids given as filters or audiences, search text) are kept only as keyed pseudonyms
(core.base.keyed: an HMAC with the store's secret), and where such a value also appears inside a
name (a report called `person-c-1042_…pdf`, a scope line) it is replaced there too. Export
paths stay in clear because erasure deletes those files through them. When a subject is
erased, `forget_subject` rewrites every earlier record that names it: its sessions, uploads,
report names and paths become pseudonyms.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.base import places
from core.guard.access import Viewer
from core.base.keyed import is_pseudonym, pseudonym, secret
from core.base.private import private_dir
from core.storage.store import Connection, Store
from core.base.times import as_timestamp, utc_now

ACTIONS = ("sign-in", "view", "play", "export", "upload", "erase", "erase-request", "denied",
           "api-key", "search", "label", "head")
SPOOL = "audit.jsonl"
COLUMNS = ["audit_id", "at", "who", "roles", "action", "target", "detail"]
# Detail keys whose values are personal identifiers, and those holding free text (searches):
# both kept only as pseudonyms. Paths under KEEP_PATHS stay until their subject is erased.
IDENTIFIERS = ("person", "customer", "customer_id", "agent", "agent_id")
TEXTS = ("q", "text", "query", "search")
KEEP_PATHS = ("files",)


class AuditError(Exception):
    """The audit line could not be written, so the act it records must not happen."""


def audit_dir(db: str | Path) -> Path:
    """The spool folder: audit/ beside the database file."""
    return places.folder(db, places.AUDIT)


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


def _around(value: str) -> re.Pattern:
    """`value` where it stands as a whole word (c-1042 in person-c-1042_x.pdf, not c-10420)."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])")


def _slug(value: str) -> str:  # how core.reporting.reports names a file after a key
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")[:60]


def _replacing(values: dict[str, str]):
    """A function replacing each of `values` (clear → pseudonym) inside a string."""
    pats = []
    for clear, pseudo in values.items():
        for form in {clear, _slug(clear)}:
            if len(form) >= 2:
                pats.append((_around(form), pseudo))

    def sub(text: str) -> str:
        for pat, pseudo in pats:
            text = pat.sub(pseudo, text)
        return text
    return sub


def _walk(obj, fn, name: str | None = None):
    """`fn(name, string)` applied to every string of a JSON-like value; `name` is the key it
    sits under (a list's items inherit their list's key)."""
    if isinstance(obj, dict):
        return {k: _walk(v, fn, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v, fn, name) for v in obj]
    return fn(name, obj) if isinstance(obj, str) else obj


def minimise(row: dict, key: bytes) -> dict:
    """The record with its personal identifiers and search text as keyed pseudonyms, also
    where they appear inside other strings of it (report names, scope lines, the target)."""
    found: dict[str, str] = {}

    def names(name, text):
        if is_pseudonym(text) or not text.strip():
            return text
        if name in IDENTIFIERS:
            found[text.strip()] = pseudonym(key, text)
            return found[text.strip()]
        if name in TEXTS:
            return pseudonym(key, text, text=True)
        return text
    detail = _walk(row.get("detail") or {}, names)
    if found:
        sub = _replacing(found)
        detail = _walk(detail, lambda name, text: text if name in KEEP_PATHS + IDENTIFIERS
                       else sub(text))
        if row.get("target"):
            row = {**row, "target": sub(row["target"])}
    return {**row, "detail": detail}


def forget_subject(con: Connection, key: bytes, values: list[str], session_ids: list[str],
                   job_ids: list[str], files: list[str]) -> int:
    """Rewrite the earlier audit records that name an erased subject, on the erasure's own
    transaction: its ids (`values`, in clear or inside names), its sessions, its uploads (the
    records of its jobs) and the paths of its deleted files become pseudonyms. Returns how
    many records were rewritten."""
    values = [v for v in values if v]
    clear = {v: pseudonym(key, v) for v in values}
    sub = _replacing(clear)
    sessions, jobs, gone = set(session_ids), set(job_ids), set(files)
    cond = ["list_contains(?, target)",
            "list_has_any(?, json_extract_string(detail, '$.sessions[*]'))",
            "list_contains(?, json_extract_string(detail, '$.job_id'))",
            "list_has_any(?, json_extract_string(detail, '$.files[*]'))"]
    params: list = [list(sessions), list(sessions), list(jobs), list(gone)]
    for form in {f for v in values for f in (v, _slug(v)) if len(f) >= 2}:
        cond.append("(contains(target, ?) OR contains(CAST(detail AS VARCHAR), ?))")
        params += [form, form]
    rows = con.execute(f"SELECT audit_id, action, target, detail FROM audit "
                       f"WHERE {' OR '.join(cond)}", params).fetchall()
    changed = []
    for audit_id, action, target, detail in rows:
        try:
            d = json.loads(detail) if isinstance(detail, str) else (detail or {})
        except ValueError:
            d = {}
        upload = action == "upload" and d.get("job_id") in jobs

        def one(name, text):
            if text in sessions or (name in KEEP_PATHS and text in gone) or \
                    (upload and name == "original_name") or name == "delivered":
                return pseudonym(key, text)
            return sub(text)
        new_target = target
        if target is not None:
            new_target = pseudonym(key, target) if target in sessions or upload else sub(target)
        new_detail = _walk(d, one)
        if (new_target, new_detail) != (target, d):
            changed.append([new_target, json.dumps(new_detail, ensure_ascii=False), audit_id])
    if changed:
        con.executemany("UPDATE audit SET target = ?, detail = ? WHERE audit_id = ?", changed)
    return len(changed)


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
        """Append one act, durably, its identifiers as pseudonyms (`minimise`); AuditError
        when it cannot be written."""
        row = entry(who, action, target, detail)
        try:
            row = minimise(row, secret(self.folder))
            data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
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
        except (OSError, ValueError) as e:  # ValueError: the store's secret is damaged
            raise AuditError(f"the audit log at {self.folder} cannot be written "
                             f"({getattr(e, 'strerror', None) or e})") from e
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
