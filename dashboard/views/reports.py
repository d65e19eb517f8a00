"""Reports: choose sessions (by filters or by name) and download CSV, Parquet, NPY, JSON or a
PDF report for a team lead."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core import reports
from dashboard.components import auth, data, filters, ui

BUILT_KEY = "report_files"
MAX_SESSIONS = 2000  # a report beyond this is a batch job (`emoscope export`), not a click


def chosen(summary: pd.DataFrame, k) -> tuple[pd.DataFrame, str]:
    with st.expander("Which sessions", expanded=True):
        f = filters.widgets(summary, data.summary_options(k), key="rp")
        rows = filters.apply(summary, f)
        names = dict(zip(summary.session_id, summary.file_name))
        pick = st.multiselect("Only these sessions (optional)", rows.session_id.tolist(),
                              format_func=lambda s: f"{names.get(s, s)} · {s}", key="rp_pick")
    if pick:
        rows = rows[rows.session_id.isin(pick)]
    parts = []
    if f.since or f.until:
        parts.append(f"dates {f.since or '…'} to {f.until or '…'}")
    for name, vals in (("agent", f.agents), ("team", f.teams), ("person", f.people),
                       ("role", f.roles), ("dominant", f.dominant), ("flags", f.flags)):
        if vals:
            parts.append(f"{name} {', '.join(map(str, vals))}")
    if f.text:
        parts.append(f"matching '{f.text}'")
    if pick:
        parts.append(f"{len(pick)} chosen sessions")
    scope = "Sessions: " + ("; ".join(parts) if parts else "all") + f" ({len(rows)} sessions)."
    return rows[rows.status == "ok"], scope


def build(rows: pd.DataFrame, scope: str, k) -> dict[str, bytes] | None:
    """Every format for these sessions, read with the viewer's scope; audited first (None when
    the audit cannot be written: nothing is built)."""
    if not auth.record("export", f"{len(rows)} sessions",
                       {"sessions": rows.session_id.tolist(), "scope": scope}):
        return None
    return reports.build_all(data.reader(k), rows, scope, alerts=data.alerts(k))


def main() -> None:
    if not ui.page("Reports"):
        return
    k = data.state()
    summary = data.session_summary(k)
    rows, scope = chosen(summary, k)
    st.caption(ui.md(scope))
    if rows.empty:
        st.info("No analysed session matches; widen the filters.")
        return
    if len(rows) > MAX_SESSIONS:
        st.warning(f"{len(rows):,} sessions is more than one report holds here "
                   f"({MAX_SESSIONS:,}); narrow the filters.")
        return
    built = st.session_state.get(BUILT_KEY)
    if built and built["_ids"] != tuple(rows.session_id):
        built = None  # the selection changed since the files were built
    if st.button("Build the files", type="primary", key="rp_build"):
        with st.spinner("Building…"):
            built = build(rows, scope, k)
        st.session_state[BUILT_KEY] = built
    if not built:
        st.caption("Builds CSV and Parquet of the segments, an NPY of their embeddings with "
                   "ids, JSON in the predict format and a PDF report.")
        return
    stamp = dt.date.today().isoformat()
    st.success(f"{built['_n']:,} segments from {len(built['_ids']):,} sessions.")
    c = st.columns(5)
    c[0].download_button("CSV", built["csv"], f"emoscope-{stamp}.csv", "text/csv")
    c[1].download_button("Parquet", built["parquet"], f"emoscope-{stamp}.parquet",
                         "application/vnd.apache.parquet")
    c[2].download_button("NPY (embeddings + ids)", built["npy"], f"emoscope-{stamp}.npy",
                         "application/octet-stream")
    c[3].download_button("JSON (predict format)", built["json"], f"emoscope-{stamp}.json",
                         "application/json")
    c[4].download_button("PDF report", built["pdf"], f"emoscope-{stamp}.pdf",
                         "application/pdf", type="primary")


with ui.guard():
    main()
