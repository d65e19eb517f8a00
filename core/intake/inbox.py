"""The inbox folder: files waiting for the worker, under generated names.

A user's file name is data, never a path: uploads are stored as `u<time>-<random>.<ext>` with
the original name (cleaned for display) in a `<name>.meta.json` sidecar (the whole name plus a
suffix, so no upload — `x.json` included — can be its own sidecar). Both are written to a
dot-named temporary file and renamed into place, so the worker never sees half a file; the
sidecar says so (`whole`), and the worker takes such a file at once.

Every other entry is the worker's too: dot-files and files in sub-folders are taken like the
rest, links and other non-files become named failures, and what the product itself leaves
behind (an upload's temporary, a sidecar whose recording never came) is skipped while it may
still be in flight and named as a failure once it is a day old. Files copied in by hand are
taken once unchanged for the worker's settle time, or at once when a finished-copy marker
`<name>.copied` stands beside them.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterable

from core.base import places
from core.base.names import is_text
from core.base.private import private_dir

SIDECAR = ".meta.json"  # appended to the whole name: `u1.wav` → `u1.wav.meta.json`
COPIED = ".copied"  # `x.wav.copied`, empty: x.wav is whole, take it now
PART = ".part"  # the product's own temporaries (dot-named, ending .part)
STALE_S = 86_400.0  # a temporary or lone sidecar this old is a leftover, named as a failure
_SAFE_EXT = re.compile(r"^\.[a-z0-9]{1,8}$")
_MAX_NAME = 120
_JOB_ID = re.compile(r"^j\d{14}-[0-9a-f]{8}$")  # core.intake.jobs.new_job_id
META_FIELDS = ("agent_id", "customer_id", "team", "recorded_at", "tags", "roles")


class InboxError(Exception):
    """A path or upload the inbox refuses; the message is the user-facing reason."""


def data_dir_of(db: str | Path) -> Path:
    """The data directory: the folder that holds the database file."""
    return places.home(db)


def inside(child: str | Path, parent: str | Path) -> bool:
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def check_inside(path: str | Path, data_dir: str | Path, what: str) -> Path:
    """`path` resolved, or InboxError when it lies outside the data directory."""
    resolved = Path(path).resolve()
    if not inside(resolved, data_dir):
        raise InboxError(f"{what} {path} is outside the data directory {Path(data_dir).resolve()}")
    return resolved


def safe_ext(name: str) -> str:
    """The lower-case extension when it is short and alphanumeric, else '.bin'."""
    ext = os.path.splitext(str(name).replace("\x00", ""))[1].lower()
    return ext if _SAFE_EXT.match(ext) else ".bin"


def display_name(name: str) -> str:
    """The user's name made fit to show: no folders, control characters or unbounded length."""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    if len(name) > _MAX_NAME:
        name = name[:_MAX_NAME - 1] + "…"
    return name or "unnamed"


def sidecar_of(audio: str | Path) -> Path:
    """Where the metadata of inbox file `audio` is kept."""
    audio = Path(audio)
    return audio.with_name(audio.name + SIDECAR)


def marker_of(audio: str | Path) -> Path:
    audio = Path(audio)
    return audio.with_name(audio.name + COPIED)


def new_name(original: str) -> str:
    return f"u{datetime.now(timezone.utc):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:12]}{safe_ext(original)}"


def clean_metadata(meta: dict) -> dict:
    """Only known fields, as short strings (tags and roles as lists of them)."""
    out: dict = {}
    for key in META_FIELDS:
        value = meta.get(key)
        if value in (None, "", [], ()):
            continue
        if isinstance(value, (list, tuple)):
            items = [display_name(v)[:60] for v in value if str(v).strip()]
            if items:
                out[key] = items[:32]
        else:
            out[key] = "".join(c for c in str(value) if unicodedata.category(c)[0] != "C")[:120]
    return out


def _atomic_write(target: Path, chunks: Iterable[bytes]) -> int:
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}.part")
    size = 0
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def _chunks(source: BinaryIO | bytes | Iterable[bytes], limit: int | None, block: int = 1 << 20):
    if isinstance(source, (bytes, bytearray)):
        source = memoryview(source)
        for i in range(0, len(source), block):
            yield bytes(source[i:i + block])
        return
    parts = iter(lambda: source.read(block), b"") if hasattr(source, "read") else source
    total = 0
    for chunk in parts:
        total += len(chunk)
        if limit is not None and total > limit:
            raise InboxError(f"larger than the {limit / 1e6:.0f} MB limit")
        yield chunk


def put(inbox: str | Path, original_name: str, source: BinaryIO | bytes | Iterable[bytes],
        metadata: dict | None = None, max_bytes: int | None = None,
        job_id: str | None = None) -> Path:
    """Store an upload in the inbox under a generated name; returns the file's path.

    The sidecar goes first, so when the audio appears its metadata is already there. `job_id`
    (core.intake.jobs.new_job_id) names the job the worker will file it under, so a process that
    cannot write the database (the API) can tell its caller which job to follow.
    """
    inbox = private_dir(inbox)
    if isinstance(source, (bytes, bytearray)) and max_bytes is not None and len(source) > max_bytes:
        raise InboxError(f"larger than the {max_bytes / 1e6:.0f} MB limit")
    name = new_name(original_name)
    target = inbox / name
    sidecar = sidecar_of(target)
    # `whole`: the recording appears by a rename, complete, so the worker need not wait.
    body = {"original_name": display_name(original_name), "whole": True,
            "metadata": clean_metadata(metadata or {})}
    if job_id is not None:
        body["job_id"] = job_id
    _atomic_write(sidecar, [json.dumps(body, ensure_ascii=False).encode()])
    try:
        _atomic_write(target, _chunks(source, max_bytes))
    except BaseException:
        sidecar.unlink(missing_ok=True)
        raise
    return target


def read_sidecar(audio: Path) -> tuple[str | None, dict, str | None]:
    """(original name, metadata, problem) from the sidecar next to `audio`, if there is one."""
    sidecar = sidecar_of(audio)
    if not sidecar.is_file() or sidecar.is_symlink():
        return None, {}, None
    try:
        body = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        return None, {}, f"metadata sidecar {sidecar.name} is unreadable ({str(e)[:80]})"
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    original = body.get("original_name")
    return (display_name(original) if original else None), clean_metadata(meta), None


_BYTES_KEY = "/x"  # "/" never occurs in a file name, so such a key cannot be a real name


def key_of(name: str) -> str:
    """An inbox entry's name as the jobs table keeps it: the name itself when it is UTF-8 text;
    otherwise (bytes that are not UTF-8, which a VARCHAR cannot hold) "/x" and the name's
    bytes in hex, so the file is found again exactly as it is on disk."""
    if is_text(name):
        return name
    return _BYTES_KEY + os.fsencode(name).hex()


def name_of(key: str) -> str:
    """The file name (as the OS gives it) behind a jobs-table key."""
    if key.startswith(_BYTES_KEY):
        return os.fsdecode(bytes.fromhex(key[len(_BYTES_KEY):]))
    return key


def entry(inbox: str | Path, key: str) -> Path:
    return Path(inbox) / name_of(key)


def _sidecar_body(audio: Path) -> dict:
    try:
        body = json.loads(sidecar_of(audio).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def requested_job_id(audio: Path) -> str | None:
    """The job id the uploader chose in the sidecar (`put(..., job_id=)`), when well-formed."""
    job_id = _sidecar_body(audio).get("job_id")
    return job_id if isinstance(job_id, str) and _JOB_ID.match(job_id) else None


def known_whole(audio: Path) -> bool:
    """The file is complete: `put` renamed it into place (its sidecar says so), or whoever
    copied it in left a finished-copy marker beside it."""
    return marker_of(audio).is_file() or _sidecar_body(audio).get("whole") is True


def find_waiting(inbox: str | Path, job_id: str) -> tuple[Path, str | None, dict] | None:
    """(path, original name, metadata) of the file waiting in the inbox for job `job_id`,
    before the worker has taken it into its queue."""
    for f in waiting(inbox):
        if requested_job_id(f) == job_id:
            original, meta, _ = read_sidecar(f)
            return f, original, meta
    return None


def waiting(inbox: str | Path, skip: Iterable[str | Path] = ()) -> list[Path]:
    """Every entry of the inbox and its sub-folders that is the worker's to take, oldest
    first: recordings, dot-files, links and other non-files (the worker names those as
    failures) — all but sidecars, markers and the product's own files while in flight.
    `skip`: folders inside it that are not (the archive, when it lies within)."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    skip = {Path(s).resolve() for s in skip}
    now = datetime.now().timestamp()
    out = []
    for folder, dirs, files in os.walk(inbox):  # links to folders are not followed
        here = Path(folder)
        dirs[:] = [d for d in dirs if (here / d).resolve() not in skip]
        names = set(files)
        links = [d for d in dirs if (here / d).is_symlink()]  # listed, never entered
        for name in files + links:
            if _ours(name, names, here, now):
                continue
            out.append(here / name)
    return sorted(out, key=lambda p: (_mtime(p), str(p)))


def _ours(name: str, names: set[str], here: Path, now: float) -> bool:
    """A file the product keeps beside recordings, not an entry of its own: a sidecar or
    marker whose recording is there, the worker's heartbeat, an upload's temporary — the
    last two kinds only while fresh (a leftover is named, never silently kept)."""
    if name == HEARTBEAT or name.startswith(HEARTBEAT + "."):
        return True
    for suffix in (SIDECAR, COPIED):
        if name.endswith(suffix) and name[:-len(suffix)] in names:
            return True
    if (name.startswith(".") and name.endswith(PART)) or name.endswith(SIDECAR):
        try:
            return now - os.lstat(here / name).st_mtime < STALE_S
        except OSError:
            return True
    return False


def _mtime(p: Path) -> int:
    try:
        return p.lstat().st_mtime_ns
    except OSError:
        return 0


# -- the worker's heartbeat: lets the upload page say whether anyone is processing the inbox --
HEARTBEAT = ".worker-heartbeat"


def beat(inbox: str | Path) -> None:
    target = Path(inbox) / HEARTBEAT
    tmp = target.with_name(f"{HEARTBEAT}.{os.getpid()}.part")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, target)


def heartbeat_age(inbox: str | Path) -> float | None:
    """Seconds since the worker last looked at the inbox; None when it never did."""
    try:
        return max(0.0, datetime.now().timestamp() - (Path(inbox) / HEARTBEAT).stat().st_mtime)
    except OSError:
        return None
