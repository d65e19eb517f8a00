"""Corrections: a reviewer's label for one moment (a segment), with who set it and when.

A correction is what a head (core/storage/heads) learns from. Its label is one of the nine or one the
organisation defines in emoscope.toml:

    [calibration.labels]
    frustrated = "angry"   # the organisation's label = the emotion it counts as

An organisation label counts as its emotion wherever figures are made of the nine (mixes,
negative share, alerts); the label itself is kept beside it (segments.head_label).

The dashboard and the API never write to the database (the worker is its single writer), so a
correction is first a small JSON file in the corrections spool (`corrections/` beside the
database), like a note (core/storage/notes). The worker folds the spool into the `corrections` table
between jobs; `emoscope head train` folds it before training. A correction naming no stored
segment goes to `corrections/rejected/`. The newest correction of a segment is its label.
Corrections outlive a re-analysis of their session and are erased with it (core/admin/erasure).
"""
from __future__ import annotations

import json
import os
import unicodedata
import uuid
from pathlib import Path

import pandas as pd

from core.base import places
from core.base.labels import LABELS
from core.base.private import pending_rows, read_json_object, spool_files, write_atomic
from core.base.times import as_timestamp, utc_now

SPOOL = places.CORRECTIONS
REJECTED = "rejected"
COLUMNS = ["correction_id", "segment_id", "session_id", "label", "reviewer", "created_at",
           "pending"]
MAX_LABEL = 40
MAX_REVIEWER = 120


class CorrectionError(ValueError):
    """A correction that cannot be kept; the message is the reason, in one line."""


def spool_dir(db: str | Path) -> Path:
    return places.folder(db, SPOOL)


def custom_labels(section) -> dict[str, str]:
    """[calibration.labels] of emoscope.toml: organisation label → the emotion it counts as."""
    section = section or {}
    if not isinstance(section, dict):
        raise ValueError("[calibration.labels] maps a label to one of the nine emotions")
    out = {}
    for name, emotion in section.items():
        name = str(name).strip()
        if not name or name != _clean(name, MAX_LABEL) or name in LABELS:
            raise ValueError(f"[calibration.labels] {name!r}: a new label needs a short name "
                             "other than the nine")
        if emotion not in LABELS:
            raise ValueError(f"[calibration.labels] {name} = {emotion!r}: name one of "
                             f"{', '.join(LABELS)}")
        out[name] = emotion
    return out


def choices(custom: dict[str, str] | None = None) -> list[str]:
    """The labels a reviewer may set: the nine, then the organisation's."""
    return list(LABELS) + sorted(custom or {})


def canonical(label: str, custom: dict[str, str] | None = None) -> str:
    """The emotion (one of the nine) a label counts as."""
    return label if label in LABELS else (custom or {})[label]


def _clean(text, limit: int) -> str:
    text = "".join(c for c in str(text) if unicodedata.category(c)[0] != "C")
    return text.strip()[:limit]


def put(spool: str | Path, segment_id: str, session_id: str, label: str, reviewer: str,
        custom: dict[str, str] | None = None) -> dict:
    """Drop one correction into the spool; returns it as a row (COLUMNS). The caller has
    checked that the reviewer may see the segment (Reader.segment)."""
    reviewer = _clean(reviewer, MAX_REVIEWER)
    if label not in choices(custom):
        raise CorrectionError(f"unknown label {label!r}; one of: {', '.join(choices(custom))}")
    if not reviewer:
        raise CorrectionError("a correction needs a reviewer")
    if not segment_id or not session_id:
        raise CorrectionError("a correction belongs to a segment of a session")
    now = utc_now()
    row = {"correction_id": f"k{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:10]}",
           "segment_id": _clean(segment_id, 96), "session_id": _clean(session_id, 64),
           "label": label, "reviewer": reviewer, "created_at": now.isoformat(timespec="microseconds")}
    spool = Path(spool)
    spool.mkdir(parents=True, exist_ok=True)
    write_atomic(spool / f"{row['correction_id']}.json", json.dumps(row).encode())
    return {**row, "created_at": as_timestamp(row["created_at"]), "pending": True}


def _read(path: Path) -> dict:
    try:
        raw = read_json_object(path, "correction")
    except ValueError as e:
        raise CorrectionError(str(e)) from None
    row = {k: raw.get(k) for k in COLUMNS[:-1]}
    if not all(isinstance(v, str) and v for v in row.values()):
        raise CorrectionError("a field is missing or empty")
    row["created_at"] = as_timestamp(row["created_at"])
    if row["created_at"] is None:
        raise CorrectionError("bad time")
    return row


def pending(spool: str | Path) -> pd.DataFrame:
    """Corrections still in the spool (unreadable files are left to `fold` to reject)."""
    return pd.DataFrame(pending_rows(spool, _read, CorrectionError), columns=COLUMNS)


def fold(store, spool: str | Path) -> tuple[int, list[str]]:
    """Store every spooled correction whose segment exists (one transaction), then remove
    their files; others go to rejected/. Run by the single writer. Returns (stored,
    problems)."""
    spool = Path(spool)
    files = spool_files(spool)
    if not files:
        return 0, []
    good, bad = [], []
    for path in files:
        try:
            good.append((path, _read(path)))
        except CorrectionError as e:
            bad.append((path, str(e)))
    if good:
        with store.write() as con:
            known = {(r[0], r[1]) for r in con.execute(
                "SELECT segment_id, session_id FROM segments WHERE list_contains(?, segment_id)",
                [sorted({c["segment_id"] for _, c in good})]).fetchall()}
            keep = [(p, c) for p, c in good if (c["segment_id"], c["session_id"]) in known]
            bad += [(p, f"no stored segment {c['segment_id']}") for p, c in good
                    if (c["segment_id"], c["session_id"]) not in known]
            now = utc_now()
            # A correction stored before a crash kept its file: the key makes a refold a no-op.
            con.executemany(
                "INSERT INTO corrections (correction_id, segment_id, session_id, label, reviewer, "
                "created_at, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [[c["correction_id"], c["segment_id"], c["session_id"], c["label"],
                  c["reviewer"], c["created_at"], now] for _, c in keep])
        good = keep
    for path, _ in good:
        path.unlink(missing_ok=True)
    problems = []
    for path, reason in bad:
        target = spool / REJECTED / path.name
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        problems.append(f"correction {path.name}: {reason}; moved to {REJECTED}/")
    return len(good), problems


def visible(stored: pd.DataFrame, spooled: pd.DataFrame, sessions: set[str]) -> pd.DataFrame:
    """Stored and still-pending corrections of the sessions a reader covers, oldest first."""
    spooled = spooled[spooled.session_id.isin(sessions)
                      & ~spooled.correction_id.isin(stored.correction_id)]
    parts = [p for p in (stored.assign(pending=False)[COLUMNS], spooled[COLUMNS]) if len(p)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True).sort_values(
        ["created_at", "correction_id"], kind="stable").reset_index(drop=True)


def latest(rows: pd.DataFrame) -> pd.DataFrame:
    """Each segment's newest correction: the label it has now."""
    if rows.empty:
        return rows
    return rows.sort_values(["created_at", "correction_id"], kind="stable") \
        .drop_duplicates("segment_id", keep="last").reset_index(drop=True)


def files_for(spool: str | Path, session_ids) -> list[Path]:
    """Spooled corrections (pending or rejected) of these sessions: what an erasure removes."""
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
