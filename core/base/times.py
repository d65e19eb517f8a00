"""Timestamps as the store keeps them: naive UTC datetimes."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_timestamp(value) -> datetime | None:
    """A date/datetime string (or date) as a naive datetime; None when empty or unparseable."""
    if value is None or value == "":
        return None
    try:
        return pd.Timestamp(value).to_pydatetime().replace(tzinfo=None)
    except (ValueError, TypeError):
        return None
