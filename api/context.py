"""What every endpoint on the store shares: the caller's Reader (their scope on every read),
the audit (each act recorded before it is served), and rows turned into JSON."""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import Depends, HTTPException, Query, Request

from api.security import Identity, require_identity
from api.settings import Settings
from core.base import places
from core.guard.access import AccessConfig
from core.storage.audit import AuditError, AuditLog
from core.intake.inbox import check_inside, data_dir_of
from core.storage.queries import Reader
from core.storage.store import Store

STORE_RETRY_S = 5.0  # how long a read waits for the writer's lock before 503


@dataclass
class Caller:
    identity: Identity
    settings: Settings
    audio_root: Path | None
    access: AccessConfig | None = None  # [access] of emoscope.toml: who may use which tags
    labels: dict | None = None  # [calibration.labels]: the organisation's own labels

    @property
    def viewer(self):
        return self.identity.viewer

    @property
    def store(self) -> Store:
        return Store(self.settings.db, retry_s=STORE_RETRY_S)

    def has_store(self) -> bool:
        return self.store.exists()

    def reader(self) -> Reader:
        """The only way an endpoint reads sessions: with the caller's scope."""
        return Reader(self.store, self.viewer, self.audio_root)

    def record(self, action: str, target: str | None = None, detail: dict | None = None) -> None:
        """Record the act before it is carried out; 503 when the audit cannot be written (the
        act then does not happen)."""
        try:
            AuditLog.beside(self.settings.db).record(self.viewer, action, target,
                                                     {**(detail or {}), "via": "api"})
        except AuditError as e:
            raise HTTPException(503, f"not done: {e}", headers={"Retry-After": "30"}) from None

    @property
    def inbox(self) -> Path:
        home = data_dir_of(self.settings.db)
        chosen = self.settings.inbox
        return check_inside(chosen, home, "inbox") if chosen \
            else places.folder(self.settings.db, places.INBOX)


def caller(request: Request, identity: Identity = Depends(require_identity)) -> Caller:
    now = request.app.state.gate.refresh()
    return Caller(identity, request.app.state.settings, now.audio_root, now.access, now.labels)


# -- parameters ------------------------------------------------------------------------------------
DAY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # a day parameter: a string, as the CLI takes it


def day_query(description: str):
    """A YYYY-MM-DD parameter, published as `format: date` (what `day` accepts, no looser)."""
    return Query(None, pattern=DAY, description=description, json_schema_extra={"format": "date"})


PERIOD_DESCRIPTION = ("latest-week, latest-month (counted back from the newest session in "
                      "scope), this-week (the calendar week), all; since/until narrow it "
                      "further. The same words as `emoscope export --period`.")


def known_query(request: Request) -> None:
    """422 for a query parameter the route does not take (a typo such as `teem=` would
    otherwise answer everything), naming the ones it does."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names = _query_names(route)
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        raise HTTPException(422, f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                                 f"{', '.join(repr(u[:40]) for u in unknown[:5])}; "
                                 f"{request.method} {route.path} takes "
                                 f"{', '.join(sorted(names)) or 'none'}")


_names: dict[int, frozenset] = {}


def _query_names(route) -> frozenset:
    got = _names.get(id(route))
    if got is None:
        names, todo = set(), [route.dependant]
        while todo:  # the route's own parameters and those of its dependencies
            d = todo.pop()
            names |= {p.alias or p.name for p in d.query_params}
            todo += d.dependencies
        got = _names[id(route)] = frozenset(names)
    return got


def day(value: str | None, name: str) -> str | None:
    """A YYYY-MM-DD parameter checked as a date; 422 naming it when it is not one."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise HTTPException(422, f"{name}: a day like 2026-11-02, not {value[:40]!r}") from None


# -- rows → JSON ----------------------------------------------------------------------------------
def plain(v):
    """One cell as JSON: numbers, text, lists, ISO times; NaN and NaT as null."""
    if v is None:
        return None
    if isinstance(v, (pd.Timestamp, np.datetime64)):
        return None if pd.isna(v) else pd.Timestamp(v).isoformat()
    if isinstance(v, (np.ndarray, list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else round(f, 6)
    if v is pd.NaT or (not isinstance(v, str) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    return v


def records(df: pd.DataFrame, columns=None, drop=()) -> list[dict]:
    cols = [c for c in (columns or df.columns) if c in df.columns and c not in drop]
    return [{c: plain(v) for c, v in zip(cols, row)}
            for row in df[cols].itertuples(index=False, name=None)]
