"""Files and folders only their owner can read: recordings and what is derived from them.

Every entry point (`emoscope ...`, the dashboard) sets the umask to 077 first, so whatever the
process creates — DuckDB's file and WAL included — is 0600/0700; the helpers here make the
folders the product owns private even when they already existed with looser modes.
"""
from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

FILE_MODE, DIR_MODE = 0o600, 0o700


def private_umask() -> None:
    os.umask(0o077)


def private_dir(path: str | Path) -> Path:
    """Create (parents too) and make the folder 0700; returns it."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    tighten(p)
    return p


def tighten(path: str | Path) -> None:
    """Drop group and other permissions from a file or folder we own; silent when it is gone
    or belongs to someone else."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid() or not st.st_mode & 0o077:
            return
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass


def write_private(path: str | Path, data: bytes) -> Path:
    """Write a whole file as 0600 (created so, never world-readable for an instant)."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    tighten(p)
    return p


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write a whole file as 0600 under a temporary name, flushed to disk, then rename it into
    place, so a reader (or a crash) only ever sees the old file or the new one."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tighten(p)
    return p


def spool_files(spool: str | Path) -> list[Path]:
    """The finished JSON files of a spool folder (notes, corrections), by name: never a file
    still being written (write_atomic's `.NAME.part`) and never a link."""
    spool = Path(spool)
    if not spool.is_dir():
        return []
    return sorted(Path(e.path) for e in os.scandir(spool)
                  if e.name.endswith(".json") and not e.name.startswith(".")
                  and e.is_file(follow_symlinks=False))


def pending_rows(spool: str | Path, read, bad: type[Exception]) -> list[dict]:
    """Every entry of a spool folder that `read` accepts, marked `pending`; one it rejects
    with `bad` is skipped here (the writer's fold rejects it and says why)."""
    rows = []
    for path in spool_files(spool):
        try:
            rows.append({**read(path), "pending": True})
        except bad:
            continue
    return rows


def read_json_object(path: Path, what: str) -> dict:
    """A spooled JSON object; ValueError saying what is wrong with it otherwise."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable ({str(e)[:80]})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"not a {what} object")
    return raw
