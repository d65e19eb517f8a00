"""Reports: for a team, an agent, a person or any selection of sessions — a PDF for its
audience, a per-session CSV, the segments (CSV, Parquet, JSON) and embeddings (NPY), each file
named after what it holds. `emoscope export` makes the same files with the same names."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core.reporting import reports
from dashboard.components import auth, data, filters, nav, ui

BUILT_KEY = "report_files"
MAX_SESSIONS = 2000  # a report beyond this is a batch job (`emoscope export`), not a click
AUDIENCES = {"sessions": "Any sessions", "team": "A team", "agent": "An agent",
             "person": "A person"}


def _iso(day: dt.date | None, plus: int = 0) -> str | None:
    return (day + dt.timedelta(days=plus)).isoformat() if day else None


def audience_spec(k, kind: str, opts: dict) -> reports.ReportSpec | None:
    # A person is whom the Person page follows (a diary's voice or a customer, never an
    # agent), in its order; the one it follows now is the default.
    choices = {"team": opts["teams"], "agent": opts["agents"],
               "person": filters.persons(data.person_sessions(k)) if kind == "person"
               else []}[kind]
    if not choices:
        st.info(f"No session names a {kind} yet.")
        return None
    c = st.columns([1, 3])
    if kind == "person" and st.session_state.get("rp_person") not in choices:
        wanted = nav.wanted_person()
        st.session_state["rp_person"] = wanted if wanted in choices else choices[0]
    key = c[0].selectbox(kind.capitalize(), choices, key=f"rp_{kind}")
    since, until = filters.period("rp", opts["dates"], c[1])
    roles = filters.pick_many(st, "Only the speech of (optional)", opts["roles"], "rp_roles")
    return reports.ReportSpec(kind, key, _iso(since), _iso(until, 1), roles=tuple(roles),
                              period=filters.period_word())


def selection_spec(summary: pd.DataFrame, opts: dict) -> reports.ReportSpec:
    f = filters.widgets(summary, opts, key="rp")
    rows = filters.apply(summary, f)
    names = dict(zip(summary.session_id, summary.file_name))
    pick = st.multiselect("Only these sessions (optional)", rows.session_id.tolist(),
                          format_func=lambda s: f"{names.get(s, s)} · {s}", key="rp_pick")
    if pick:
        rows = rows[rows.session_id.isin(pick)]
    parts = [f"{name} {', '.join(map(str, vals))}" for name, vals in (
        ("agent", f.agents), ("team", f.teams), ("person", f.people),
        ("dominant", f.dominant), ("flags", f.flags), ("category", f.categories)) if vals]
    if f.text:
        parts.append(f"matching '{f.text}'")
    if pick:
        parts.append(f"{len(pick)} chosen sessions")
    rows = rows[rows.status == "ok"]
    return reports.ReportSpec("sessions", None, _iso(f.since), _iso(f.until, 1),
                              tuple(rows.session_id), tuple(f.roles), "; ".join(parts),
                              period=filters.period_word())


def included(k, spec: reports.ReportSpec) -> pd.DataFrame:
    table = data.session_table(k, spec.filter())
    if table.empty:
        return table
    return table.sort_values("when", kind="stable")


def main() -> None:
    if not ui.page("Reports"):
        return
    k = data.state()
    summary = data.session_summary(k)
    opts = data.summary_options(k)
    st.session_state.setdefault("rp_kind", "sessions")
    kind = st.segmented_control("Report for", list(AUDIENCES), format_func=AUDIENCES.get,
                                key="rp_kind") or "sessions"
    with st.expander("Which sessions", expanded=True):
        spec = selection_spec(summary, opts) if kind == "sessions" \
            else audience_spec(k, kind, opts)
    if spec is None:
        return
    rows = included(k, spec)
    if rows.empty:
        st.info(filters.empty_reason(opts["dates"]))
        return
    if len(rows) > MAX_SESSIONS:
        st.warning(f"{len(rows):,} sessions is more than one report holds here "
                   f"({MAX_SESSIONS:,}); narrow the filters or use `emoscope export`.")
        return
    st.caption(ui.md(reports.scope_line(spec, len(rows), rows["when"])))
    with st.expander(f"The {len(rows):,} sessions included", expanded=False):
        st.dataframe(ui.blank(rows[["when", "file_name", "agent_id", "customer_id", "team",
                                    "duration_s", "neg_share", "alerts", "severity"]]),
                     hide_index=True, width="stretch", column_config={
                         "when": st.column_config.DatetimeColumn("When",
                                                                 format="YYYY-MM-DD HH:mm"),
                         "duration_s": st.column_config.NumberColumn("Seconds", format="%.0f"),
                         "neg_share": st.column_config.NumberColumn("Negative",
                                                                    format="percent")})
    built = st.session_state.get(BUILT_KEY)
    if built and built["spec"] != spec:
        built = None  # the selection changed since the files were built
    if st.button("Build the files", type="primary", key="rp_build"):
        # Audited before anything is built; nothing is built when the audit cannot be written.
        if not auth.record("export", f"{len(rows)} sessions",
                           {"sessions": rows.session_id.tolist(),
                            "scope": reports.scope_line(spec, len(rows), rows["when"]),
                            "filters": {spec.kind: spec.key} if spec.key else {}}):
            return
        with st.spinner("Building…"):
            report = reports.build(data.reader(k), spec, data.rules(), data.notes_spool())
        built = {"spec": spec, "report": report}
        st.session_state[BUILT_KEY] = built
    if not built or built["report"] is None:
        st.caption("Builds the PDF report for this audience, a CSV with one row per session, "
                   "the segments as CSV, Parquet and JSON (predict format) and an NPY of their "
                   "embeddings with ids.")
        return
    report = built["report"]
    st.success(f"{report.n_segments:,} segments from {len(report.session_ids):,} sessions: "
               f"`{report.stem}`")
    # every format of core.reporting.reports.FORMATS, in its order (build made one file of each)
    formats = [reports.FORMATS[f] for f in report.files if f in reports.FORMATS]
    for col, fmt in zip(st.columns(len(formats)), formats):
        name, blob = report.files[fmt.name]
        col.download_button(fmt.label, blob, name, fmt.mime, key=f"rp_dl_{fmt.name}",
                            type="primary" if fmt.name == "pdf" else "secondary")


with ui.guard():
    main()
