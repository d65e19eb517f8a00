"""Server-side render time of each dashboard page, and the top-10 similarity query, on a store.

    .venv/bin/python bench/synth_store.py --db /tmp/bench.duckdb     # 10,000 sessions, 500k segs
    .venv/bin/python bench/dashboard.py --db /tmp/bench.duckdb

A page's render is one AppTest script run of the real app (st.navigation + the page). "cold"
starts with empty Streamlit caches (the first visitor after new data lands); "warm" is the
median of the following runs (every later click). Targets: overview and session ≤ 1 s warm,
top-10 similarity ≤ 0.5 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APP = str(ROOT / "dashboard" / "app.py")
PAGES = ["overview", "session", "agents", "person", "alerts", "similar", "reports"]
TARGETS = {"overview": 1.0, "session": 1.0}


_COMPONENTS = None


def app_test():
    """An AppTest of the app. AppTest scans every installed package for component manifests
    on its first run (~0.7 s here), which a running server does once at start: do it once."""
    global _COMPONENTS
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=600)
    if _COMPONENTS is None:
        from streamlit.components.v2.component_manager import BidiComponentManager
        _COMPONENTS = BidiComponentManager()
        _COMPONENTS.discover_and_register_components(start_file_watching=False)
    at._bidi_component_manager = _COMPONENTS
    return at


def render(page: str, session_id: str | None, runs: int) -> tuple[float, float, int]:
    """(cold seconds, median warm seconds, errors shown) for one page."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    times, errors = [], 0
    for i in range(runs + 1):
        at = app_test()
        if session_id:
            at.session_state["session_id"] = session_id
        if page != "overview":
            at.switch_page(f"views/{page}.py")
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        errors = len(at.exception) + len(at.error)
        if errors:
            print(f"  {page}: {[e.value for e in at.exception] + [e.value for e in at.error]}",
                  file=sys.stderr)
    return times[0], statistics.median(times[1:]), errors


def similarity(db: Path, queries: int) -> dict:
    """The Similar page's search as it runs: core.index.similar over the ANN index beside the
    store, through an operator's Reader, from `queries` stored segments."""
    from core.guard.access import operator
    from core.index import segment_index, similar
    from core.storage.queries import Reader
    from core.storage.store import Store

    store = Store(db)
    reader = Reader(store, operator())
    space = segment_index.spaces(store)[0]
    t0 = time.perf_counter()
    ix = similar.index_for(store, space)
    load_s = time.perf_counter() - t0
    probes = store.query("SELECT segment_id FROM segments WHERE embedding IS NOT NULL "
                         f"USING SAMPLE reservoir({int(queries)} ROWS) REPEATABLE (0)").segment_id
    plain, filtered = [], []
    for seg in probes:
        t0 = time.perf_counter()
        found = similar.similar_to(reader, seg, 10)
        plain.append(time.perf_counter() - t0)
        assert found is not None and (found.searched < 10 or len(found.hits) == 10)
        t0 = time.perf_counter()
        similar.similar_to(reader, seg, 10, speakers=["customer"], labels=["angry", "sad"])
        filtered.append(time.perf_counter() - t0)
    return {"segments": len(ix), "dim": space.dim, "load_s": load_s,
            "top10_s": statistics.median(plain), "top10_p95_s": float(np.percentile(plain, 95)),
            "top10_filtered_s": statistics.median(filtered)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3, help="warm runs per page")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--pages", nargs="*", default=PAGES)
    args = ap.parse_args()
    os.environ["EMOSCOPE_DB"] = str(args.db.resolve())
    from core.guard.access import operator
    from core.storage.queries import Reader
    from core.storage.store import Store
    store = Store(args.db)
    counts = Reader(store, operator()).counts()
    # The session page on a long session that has frame curves.
    sid = store.query("SELECT g.session_id, count(*) AS n FROM segments g WHERE g.session_id IN "
                      "(SELECT DISTINCT session_id FROM frames) GROUP BY ALL "
                      "ORDER BY n DESC LIMIT 1")
    sid = sid.session_id.iloc[0] if len(sid) else None
    print(f"store: {counts['sessions']:,} sessions, {counts['segments']:,} segments, "
          f"{counts['frames']:,} frames; session page on {sid}")
    print(f"{'page':<10} {'cold s':>8} {'warm s':>8} {'target':>8}  errors")
    for page in args.pages:
        cold, warm, errors = render(page, sid, args.runs)
        target = TARGETS.get(page)
        verdict = "" if target is None else ("ok" if warm <= target else "SLOW")
        print(f"{page:<10} {cold:8.2f} {warm:8.2f} {target or '-':>8}  {errors} {verdict}",
              flush=True)
    s = similarity(args.db, args.queries)
    print(f"similarity over {s['segments']:,} × {s['dim']}: index open {s['load_s']:.1f} s "
          f"(at start); top-10 median {s['top10_s'] * 1000:.0f} ms "
          f"(p95 {s['top10_p95_s'] * 1000:.0f} ms), with filters "
          f"{s['top10_filtered_s'] * 1000:.0f} ms; target 500 ms: "
          f"{'ok' if s['top10_s'] <= 0.5 else 'SLOW'}")


if __name__ == "__main__":
    main()
