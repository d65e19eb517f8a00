"""Named periods, the same words for the dashboard, `emoscope export` and the API.

"latest-week" and "latest-month" count back from the newest session in scope, not from today:
a store of November calls looked at in December still shows its last week. "this-week" is the
calendar week holding today; "all" is no bound.
"""
from __future__ import annotations

import datetime as dt

WORDS = ("latest-week", "latest-month", "this-week", "all")
LABELS = {"latest-week": "Latest week", "latest-month": "Latest month",
          "this-week": "This week", "all": "All dates"}
DAYS = {"latest-week": 7, "latest-month": 30}


def window(word: str, newest: dt.date | None, today: dt.date | None = None
           ) -> tuple[dt.date | None, dt.date | None]:
    """(first day, last day), both inclusive, of the period `word`; None: unbounded. A
    "latest" period with no data in scope is unbounded (there is nothing to count from)."""
    if word not in WORDS:
        raise ValueError(f"a period is one of {', '.join(WORDS)}, not {word!r}")
    if word == "this-week":
        today = today or dt.date.today()
        monday = today - dt.timedelta(days=today.weekday())
        return monday, monday + dt.timedelta(days=6)
    if word == "all" or newest is None:
        return None, None
    return newest - dt.timedelta(days=DAYS[word] - 1), newest


def bounds(word: str | None, newest: dt.date | None, since: str | None = None,
           until: str | None = None, today: dt.date | None = None
           ) -> tuple[str | None, str | None]:
    """The SessionFilter bounds (since inclusive, until exclusive, ISO days) of a period
    narrowed by explicit days: both apply, the later start and the earlier end win."""
    lo, hi = window(word or "all", newest, today)
    starts = [d for d in (lo.isoformat() if lo else None, since) if d]
    ends = [d for d in ((hi + dt.timedelta(days=1)).isoformat() if hi else None, until) if d]
    return (max(starts) if starts else None), (min(ends) if ends else None)


def empty_reason(word: str | None, newest: dt.date | None) -> str:
    """Why a period holds nothing, in words: what the page says instead of a bare zero."""
    if newest is None:
        return "No analysed session is in your scope with these filters."
    if word == "this-week":
        return (f"Nothing was recorded this calendar week; the newest session in scope is from "
                f"{newest:%Y-%m-%d}. Choose “Latest week” to see the most recent data.")
    return "No session in this period passes the filters."
