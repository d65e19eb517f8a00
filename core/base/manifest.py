"""Manifest CSV: one row per file with who was on it and when.

Columns: file, agent_id, customer_id, team, recorded_at, tags (";"-separated),
roles (";"-separated speaker per channel, empty for the defaults). `file` is relative to the
manifest's own folder unless absolute.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from core.base.types import SessionMeta

COLUMNS = ("file", "agent_id", "customer_id", "team", "recorded_at", "tags", "roles")


class ManifestError(Exception):
    pass


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(";") if v.strip())


def resolved(path: Path) -> Path:
    """`path` with links followed where they lead somewhere; a link loop stays as written
    (absolute), so it is looked up — and later fails — by its own name."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: RuntimeError before Python 3.13
        return Path(os.path.abspath(path))


def read(path: str | Path) -> dict[Path, SessionMeta]:
    """Map each listed file's resolved path to its metadata."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{path}: not a readable CSV ({e})") from None
    if rows and "file" not in rows[0]:
        raise ManifestError(f"{path}: needs a 'file' column (columns: {', '.join(COLUMNS)})")
    out: dict[Path, SessionMeta] = {}
    for row in rows:
        name = (row.get("file") or "").strip()
        if not name:
            continue
        target = Path(name) if Path(name).is_absolute() else path.parent / name
        out[resolved(target)] = SessionMeta(
            agent_id=(row.get("agent_id") or "").strip() or None,
            customer_id=(row.get("customer_id") or "").strip() or None,
            team=(row.get("team") or "").strip() or None,
            recorded_at=(row.get("recorded_at") or "").strip() or None,
            tags=_split(row.get("tags")),
            roles=_split(row.get("roles")) or None,
        )
    return out
