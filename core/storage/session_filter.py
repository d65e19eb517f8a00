"""Which sessions a read covers: `SessionFilter`, the one filter every scoped read takes
(core.storage.queries.Reader turns it into SQL, after the viewer's scope)."""
from __future__ import annotations

from dataclasses import dataclass

# A session's date: when it was recorded, else when it was ingested.
SESSION_DATE = "coalesce({a}.recorded_at, {a}.ingested_at)"


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions a read covers; every field optional. `until` is exclusive; dates compare
    the session's date (recorded_at, else ingested_at)."""
    session_ids: tuple[str, ...] | None = None
    agent: str | None = None
    person: str | None = None  # customer_id: a caller's customer or a diary's person
    team: str | None = None
    since: str | None = None
    until: str | None = None
    ok_only: bool = True
    # sessions carrying any of these categories (core/analysis/categories)
    categories: tuple[str, ...] | None = None

    @classmethod
    def of(cls, session_id: str) -> "SessionFilter":
        return cls(session_ids=(session_id,), ok_only=False)


EVERY = SessionFilter()
EVERY_INCL_FAILED = SessionFilter(ok_only=False)
