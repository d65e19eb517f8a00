"""What a live stream's volatility_percentile rule compares with: earlier sessions' volatility
per speaker role, read from the store through the streaming viewer's scope (a supervisor's
stream is held against their teams' calls, as their stored calls are shown to them).

Read once per scope and again after `every_s`, shared by the streams of that scope; a store
that is busy or missing gives no reference (the rule then waits, as it does on a store with
too few sessions).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from core.guard.access import Scope, Viewer
from core.analysis.analytics import Reference
from core.storage.queries import Reader
from core.storage.store import Store

log = logging.getLogger(__name__)


def read(db: Path, viewer: Viewer) -> dict[str, tuple[float, ...]]:
    """Per speaker role, the volatility of every stored session the viewer may see."""
    store = Store(db, retry_s=2.0)
    if not store.exists():
        return {}
    m = Reader(store, viewer).session_metrics()
    if m.empty:
        return {}
    return {sp: tuple(v) for sp, v in Reference.from_rows(m[["speaker", "volatility"]])
            .values.items()}


class References:
    def __init__(self, db: Path, every_s: float = 300.0):
        self.db, self.every_s = Path(db), every_s
        self._lock = threading.Lock()
        self._cache: dict[Scope, tuple[float, dict]] = {}

    def get(self, viewer: Viewer) -> dict[str, tuple[float, ...]]:
        """The reference for this viewer's scope (blocking: call it off the event loop)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(viewer.scope)
        if hit is not None and now - hit[0] < self.every_s:
            return hit[1]
        try:
            ref = read(self.db, viewer)
        except Exception as e:  # noqa: BLE001 — busy, unreadable, from before the analytics
            log.warning("volatility reference not read: %s", e)  # tables: no new reference
            return hit[1] if hit is not None else {}
        with self._lock:
            self._cache[viewer.scope] = (now, ref)
        return ref
