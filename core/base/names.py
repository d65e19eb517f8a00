"""File names as people see them and the store keeps them.

A POSIX file name is bytes. Python hands names that are not UTF-8 over as str with lone
surrogates, which DuckDB (VARCHAR is UTF-8) and a terminal both refuse. The bytes stay as they
are on disk; what is stored and shown is the name with each such byte written as `\\xNN`.
"""
from __future__ import annotations

import os
from pathlib import PurePath


def shown(name: str | PurePath) -> str:
    """`name` as valid UTF-8 text: undecodable bytes written as \\xNN, everything else kept."""
    text = os.fspath(name)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the bytes the file system gave
    except UnicodeEncodeError:  # surrogates that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def is_text(name: str) -> bool:
    """True when `name` is valid UTF-8 text (storable and printable as it is)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
