"""Every folder and file the product keeps beside the database, named once.

The data directory is the folder holding the database file (`data/` for `data/emoscope.duckdb`).
Inside it: folders of the product's own (`FOLDERS`), and files named after the database file
(`<db>.wal`, `<db>.gate`, ...). Every module asks here for their paths; erasure takes the folders
that may hold copies of recordings and exports from `OWNED`. Imports nothing of ours."""
from __future__ import annotations

from pathlib import Path

# folders in the data directory
INBOX = "inbox"          # recordings waiting for the worker (ingest/worker, uploads, the API)
ARCHIVE = "archive"      # recordings the worker finished
FAILED = "failed"        # recordings the worker could not analyse
EXPORTS = "exports"      # reports written by `emoscope export` by default
AUDIT = "audit"          # the audit spool (core/storage/audit)
NOTES = "notes"          # the notes spool (core/storage/notes)
CORRECTIONS = "corrections"  # the corrections spool (core/storage/corrections)
ERASURES = "erasures"    # the erasure journal (core/admin/erasure)
HEAD_REQUESTS = "head_requests"  # activations asked for on the dashboard (core/storage/heads)
ACCESS = "access"        # API keys and the store's pseudonym key (core/guard/apikeys, core/base/keyed)
DASHBOARD = ".dashboard"  # the dashboard's generated secrets (dashboard/launch)
FOLDERS = (INBOX, ARCHIVE, FAILED, EXPORTS, AUDIT, NOTES, CORRECTIONS, ERASURES, HEAD_REQUESTS,
           ACCESS, DASHBOARD)
# the folders that may hold copies of recordings or of what was found in them: erasure looks
# there for files to delete (the spools are erased record by record by their own modules)
OWNED = (INBOX, ARCHIVE, FAILED, EXPORTS)

# files and folders named after the database file: `<db><suffix>`
WAL = ".wal"                  # DuckDB's write-ahead log
GATE = ".gate"                # the writer's gate (core/storage/store)
WORKER_LOCK = ".worker.lock"  # one worker per store (ingest/worker)
SHARDS = ".shards"            # Ray shards waiting for `emoscope import` (the default)
ANN = ".ann"                  # the ANN indexes (core/index/index_files, core/index/segment_index)
WORDS = ".words"              # the full-text index of what was said (core/index/word_index)
SUFFIXES = (WAL, GATE, WORKER_LOCK, SHARDS, ANN, WORDS)


def home(db: str | Path) -> Path:
    """The data directory: the folder that holds the database file."""
    return Path(db).resolve().parent


def folder(db: str | Path, name: str) -> Path:
    """One of `FOLDERS` in the data directory of `db`."""
    if name not in FOLDERS:
        raise ValueError(f"no folder {name!r} beside the store; known: {', '.join(FOLDERS)}")
    return home(db) / name


def beside(db: str | Path, suffix: str, resolve: bool = True) -> Path:
    """`<db><suffix>`, one of `SUFFIXES` (resolved, unless the caller keeps the path it was given)."""
    if suffix not in SUFFIXES:
        raise ValueError(f"no {suffix!r} beside the store; known: {', '.join(SUFFIXES)}")
    p = Path(db).resolve() if resolve else Path(db)
    return p.with_name(p.name + suffix)


def owned(db: str | Path) -> list[Path]:
    return [folder(db, name) for name in OWNED]
