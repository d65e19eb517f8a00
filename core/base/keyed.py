"""The store's secret, and the keyed pseudonyms made with it.

Audit records and the erasure journal must name a customer, a person, a search or an erased
session so that the same name matches again (who else looked at this person? is this shard
of an erased session?) without holding it in clear. A bare hash does not do that: customer
ids are short, and trying the 10⁴ ids of a four-digit scheme reverses them at once. So they
hold an HMAC-SHA-256 keyed with a random secret kept beside the store (`access/store.key`,
0600, made on first use), which nobody without the file can test guesses against.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import uuid
from functools import lru_cache
from pathlib import Path

from core.base import places
from core.base.private import private_dir, tighten

KEY_FILE = "store.key"
PREFIX = "hmac:"
_WS = re.compile(r"\s+")


def key_path(db: str | Path) -> Path:
    return places.folder(db, places.ACCESS) / KEY_FILE


def secret(db: str | Path) -> bytes:
    """The store's secret, made (once, whoever comes first) when there is none."""
    return _secret(str(key_path(db)))


@lru_cache(maxsize=16)
def _secret(path: str) -> bytes:
    p = Path(path)
    if not p.exists():
        private_dir(p.parent)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, p)  # fails if another process made it first: theirs is the one
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    tighten(p)
    data = p.read_bytes().strip()
    if len(data) < 32:
        raise ValueError(f"the store's secret {p} is too short; restore it from a backup")
    return data


def pseudonym(key: bytes, value: str, text: bool = False) -> str:
    """`hmac:` and 24 hex digits naming `value`; `text` folds case and spaces first (search
    text, so "Refund  please" and "refund please" match)."""
    v = str(value).strip()
    if text:
        v = _WS.sub(" ", v.lower())
    return PREFIX + hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:24]


def is_pseudonym(value) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)
