"""How failures are told to people: one line, bounded."""
from __future__ import annotations


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first non-empty line of an error's message, at most `limit` characters ('' when empty)."""
    return next((line for line in str(error).splitlines() if line.strip()), "")[:limit]
