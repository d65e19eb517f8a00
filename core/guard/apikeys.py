"""API keys for the HTTP API: made by `emoscope apikey create`, kept only as their SHA-256.

The one place keys live is a private file beside the database, `access/api_keys.json` (0600 in
a 0700 folder), not emoscope.toml: the settings file is written by hand, carries comments and
is often kept in version control and shared between machines, while keys are state that
commands create and revoke for one database's data. `core.admin.settings.load_settings(db=...)`
reads the file into `AccessConfig.api_keys`; the API re-reads it when it changes, so a revoked
key stops working at the next request. Writes take an exclusive lock and replace the file
atomically, so two commands never lose each other's change.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path

from core.base import places
from core.guard.access import ROLES, AccessConfig, AccessError, hash_api_key
from core.base.private import private_dir, write_atomic
from core.base.times import utc_now

PREFIX = "emo_"  # tells a key from an OIDC token (a JWT) in an Authorization header
FILE = Path(places.ACCESS) / "api_keys.json"
# Written the first time authentication is configured for a store and never removed by a
# command: a keys file that is later missing, empty or broken then means closed, not open.
CONFIGURED = Path(places.ACCESS) / "configured"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked; the message says why in one line."""


def keys_file(db: str | Path) -> Path:
    return places.home(db) / FILE


def load(db: str | Path | None) -> list[dict]:
    """The stored key entries (name, sha256, role, teams, programmes, created_at, created_by);
    [] when there is no database or no key yet."""
    if db is None:
        return []
    path = keys_file(db)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise AccessError(f"{path} cannot be read ({e}); fix or remove it") from None
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list):
        raise AccessError(f"{path} holds no list of keys; fix or remove it")
    return keys


def stamp(db: str | Path | None) -> tuple:
    """Changes whenever the keys file does, even twice within one clock tick (it is replaced,
    never rewritten in place); () when there is no file."""
    if db is None:
        return ()
    try:
        st = keys_file(db).stat()
    except OSError:
        return ()
    return st.st_mtime_ns, st.st_ino, st.st_size


def configured(db: str | Path | None) -> bool:
    """Whether authentication was ever configured for this store (a key created, or the API
    served with an identity provider)."""
    if db is None:
        return False
    home = places.home(db)
    return (home / CONFIGURED).exists() or (home / FILE).exists()


def mark_configured(db: str | Path | None) -> None:
    if db is None or not places.home(db).is_dir() or (places.home(db) / CONFIGURED).exists():
        return
    try:
        write_atomic(private_dir(keys_file(db).parent) / CONFIGURED.name,
                     b"authentication has been configured for this store; without a usable key "
                     b"or identity provider the API stays closed\n")
    except OSError:  # a read-only data folder: the running API still remembers
        pass


@contextmanager
def _locked(db: str | Path):
    folder = private_dir(keys_file(db).parent)
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _save(db: str | Path, keys: list[dict]) -> None:
    write_atomic(keys_file(db), json.dumps({"keys": keys}, ensure_ascii=False, indent=1).encode())


def create(db: str | Path, name: str, role: str, teams=(), programmes=(),
           access: AccessConfig | None = None, by: str = "") -> str:
    """A new key for `role` over `teams` / `programmes`; returns the key (shown once, never
    stored). `access` (the [access] of emoscope.toml) checks that the programmes exist."""
    if not _NAME.match(name or ""):
        raise ApiKeyError("--name: 1 to 64 letters, digits, _ . @ -")
    if role not in ROLES:
        raise ApiKeyError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    teams, programmes = tuple(dict.fromkeys(teams)), tuple(dict.fromkeys(programmes))
    if role == "supervisor" and not teams and not programmes:
        raise ApiKeyError("a supervisor's key needs at least one --team (it would see nothing)")
    if role == "analyst" and not programmes and not teams:
        raise ApiKeyError("an analyst's key needs at least one --programme (it would see nothing)")
    known = access.programmes if access is not None else {}
    unknown = [p for p in programmes if p not in known]
    if unknown:
        raise ApiKeyError(f"unknown programme(s) {', '.join(unknown)}; define them under "
                        "[access.programmes] in emoscope.toml")
    key = PREFIX + secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": hash_api_key(key), "role": role, "teams": list(teams),
             "programmes": list(programmes),
             "created_at": utc_now().isoformat(timespec="seconds"), "created_by": by}
    with _locked(db):
        keys = load(db)
        if any(k.get("name") == name for k in keys):
            raise ApiKeyError(f"a key named {name} exists; revoke it first or choose another name")
        _save(db, [*keys, entry])
    mark_configured(db)
    return key


def revoke(db: str | Path, name: str) -> bool:
    """Remove the key named `name`; False when there was none."""
    with _locked(db):
        keys = load(db)
        kept = [k for k in keys if k.get("name") != name]
        if len(kept) == len(keys):
            return False
        _save(db, kept)
    return True
