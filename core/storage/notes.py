"""Notes an analyst attaches to a session (a diary entry), with author and time.

The dashboard never writes to the database (the worker is its single writer), so a note is
first a small JSON file dropped into the notes spool (`notes/` beside the database, written
under a dot-name and renamed, like an upload in the inbox). The worker folds the spool into the
`notes` table between jobs, in one transaction, then deletes the files it stored; a note that
names no stored session is moved to `notes/rejected/` with its reason. Until it is folded, a
note is shown from the spool, marked pending, so it appears the moment it is saved.
"""
from __future__ import annotations

import json
import os
import unicodedata
import uuid
from pathlib import Path

import pandas as pd

from core.base import places
from core.base.private import pending_rows, read_json_object, spool_files, write_atomic
from core.base.times import as_timestamp, utc_now

SPOOL = places.NOTES
REJECTED = "rejected"
MAX_BODY = 4000
MAX_AUTHOR = 120
COLUMNS = ["note_id", "session_id", "author", "body", "created_at", "pending"]


class NoteError(ValueError):
    """A note that cannot be kept; the message is the reason, in one line."""


def spool_dir(db: str | Path) -> Path:
    return places.folder(db, SPOOL)


def _clean(text: str, limit: int, keep_newlines: bool) -> str:
    ok = {"\n"} if keep_newlines else set()
    text = "".join(c for c in str(text) if c in ok or unicodedata.category(c)[0] != "C")
    return text.strip()[:limit]


def put(spool: str | Path, session_id: str, author: str, body: str) -> dict:
    """Drop one note into the spool; returns it as a row (COLUMNS)."""
    author = _clean(author, MAX_AUTHOR, False)
    body = _clean(body, MAX_BODY, True)
    session_id = _clean(session_id, 64, False)
    if not author:
        raise NoteError("a note needs an author")
    if not body:
        raise NoteError("a note needs some text")
    if not session_id:
        raise NoteError("a note belongs to a session")
    now = utc_now()
    note = {"note_id": f"n{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:10]}",
            "session_id": session_id, "author": author, "body": body,
            "created_at": now.isoformat(timespec="seconds")}
    spool = Path(spool)
    spool.mkdir(parents=True, exist_ok=True)
    target = spool / f"{note['note_id']}.json"
    write_atomic(target, json.dumps(note, ensure_ascii=False).encode())  # never half a note
    return {**note, "created_at": as_timestamp(note["created_at"]), "pending": True}


def _read(path: Path) -> dict:
    """One spooled note, checked; NoteError names what is wrong with it."""
    try:
        raw = read_json_object(path, "note")
    except ValueError as e:
        raise NoteError(str(e)) from None
    note = {k: raw.get(k) for k in ("note_id", "session_id", "author", "body", "created_at")}
    if not all(isinstance(v, str) and v for v in note.values()):
        raise NoteError("a field is missing or empty")
    note["author"] = _clean(note["author"], MAX_AUTHOR, False)
    note["body"] = _clean(note["body"], MAX_BODY, True)
    note["created_at"] = as_timestamp(note["created_at"])
    if note["created_at"] is None or not note["author"] or not note["body"]:
        raise NoteError("bad author, text or time")
    return note


def pending(spool: str | Path) -> pd.DataFrame:
    """Notes still in the spool (unreadable files are skipped here and rejected by `fold`)."""
    return pd.DataFrame(pending_rows(spool, _read, NoteError), columns=COLUMNS)


def fold(store, spool: str | Path) -> tuple[int, list[str]]:
    """Store every spooled note whose session exists (one transaction), then remove their
    files; others go to rejected/. Run by the single writer. Returns (stored, problems)."""
    spool = Path(spool)
    files = spool_files(spool)
    if not files:
        return 0, []
    good, bad = [], []
    for path in files:
        try:
            good.append((path, _read(path)))
        except NoteError as e:
            bad.append((path, str(e)))
    if good:
        with store.write() as con:
            known = {r[0] for r in con.execute(
                "SELECT session_id FROM sessions WHERE list_contains(?, session_id)",
                [sorted({n["session_id"] for _, n in good})]).fetchall()}
            keep = [(p, n) for p, n in good if n["session_id"] in known]
            bad += [(p, f"no stored session {n['session_id']}") for p, n in good
                    if n["session_id"] not in known]
            now = utc_now()
            # A note stored before a crash kept its file: the key makes the second fold a no-op.
            con.executemany(
                "INSERT INTO notes (note_id, session_id, author, body, created_at, stored_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [[n["note_id"], n["session_id"], n["author"], n["body"], n["created_at"], now]
                 for _, n in keep])
        good = keep
    for path, _ in good:
        path.unlink(missing_ok=True)
    problems = []
    for path, reason in bad:
        target = spool / REJECTED / path.name
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        problems.append(f"note {path.name}: {reason}; moved to {REJECTED}/")
    return len(good), problems


def visible(stored: pd.DataFrame, spooled: pd.DataFrame, sessions: set[str]) -> pd.DataFrame:
    """Stored notes and still-pending ones of the sessions a reader covers, oldest first."""
    spooled = spooled[spooled.session_id.isin(sessions) & ~spooled.note_id.isin(stored.note_id)]
    parts = [p for p in (stored.assign(pending=False)[COLUMNS], spooled[COLUMNS]) if len(p)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True).sort_values(
        ["created_at", "note_id"], kind="stable").reset_index(drop=True)


def files_for(spool: str | Path, session_ids) -> list[Path]:
    """Spooled notes (pending or rejected) about these sessions: what an erasure removes."""
    spool, wanted = Path(spool), set(session_ids)
    out = []
    for path in spool_files(spool) + spool_files(spool / REJECTED):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict) and raw.get("session_id") in wanted:
            out.append(path)
    return out
