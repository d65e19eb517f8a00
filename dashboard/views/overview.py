"""Overview: KPIs, the emotion mix over time, and the filtered sessions table."""
from __future__ import annotations

import streamlit as st

from core.analysis import aggregates, quality
from core.base import session_list
from core.base.labels import LABELS, NEGATIVE
from dashboard.components import charts, data, filters, nav, ui


def kpis(rows) -> None:
    ok = rows[rows.status == "ok"]
    talk = ok.talk_s.sum()
    neg = (ok.negative_share.fillna(0) * ok.talk_s).sum() / talk if talk > 0 else None
    c = st.columns(4)
    c[0].metric("Sessions", f"{len(rows):,}",
                help=f"{int((rows.status != 'ok').sum())} failed" if (rows.status != "ok").any()
                else None)
    c[1].metric("Audio hours", f"{ok.duration_s.sum() / 3600:,.2f}")
    c[2].metric("Negative-emotion share", "—" if neg is None else f"{neg:.0%}",
                help="Share of speech time labelled " + ", ".join(map(ui.label, NEGATIVE)))
    c[3].metric("Flagged sessions", f"{int((rows.alerts > 0).sum()):,}",
                help="Sessions with at least one alert")


def by_band(rows) -> None:
    """The KPIs split by audio band: the model is known to be less reliable on narrowband."""
    ok = rows[rows.status == "ok"]
    if ok.empty:
        return
    band = session_list.band_of(ok)
    out = []
    for name in session_list.BANDS:
        part = ok[band == name]
        talk = part.talk_s.sum()
        out.append({"band": name, "sessions": len(part),
                    "hours": part.duration_s.sum() / 3600,
                    "negative_share": (part.negative_share.fillna(0) * part.talk_s).sum() / talk
                    if talk > 0 else None,
                    "flagged": int((part.alerts > 0).sum())})
    st.dataframe(out, hide_index=True, key="ov_bands", column_config={
        "band": st.column_config.TextColumn("Audio band"),
        "sessions": st.column_config.NumberColumn("Sessions"),
        "hours": st.column_config.NumberColumn("Audio hours", format="%.2f"),
        "negative_share": st.column_config.NumberColumn("Negative share", format="percent"),
        "flagged": st.column_config.NumberColumn("Flagged sessions")})
    if (band == "narrowband").any():
        st.caption(quality.NARROWBAND_CAVEAT)


def table(rows, first_alert) -> None:
    """The sessions; a selected row opens its session at its first alert (`first_alert`:
    session → seconds), else at the start."""
    names = {x: ui.label(x) for x in LABELS}  # one lookup of the language, not one per row
    ok = rows.status == "ok"
    # A file that could not be analysed says so in its own column, with the reason.
    view = rows.assign(dominant=rows.dominant.map(names).fillna(""),
                       minutes=(rows.duration_s / 60).where(ok),
                       status=("❌ failed: " + rows.error.fillna("")).where(~ok, ""))
    cols = ["when", "file_name", *(["status"] if (~ok).any() else []), "agent_id",
            "customer_id", "team", "minutes", "dominant", "negative_share", "alerts",
            "severity", "categories", "flags", "tags"]
    view = ui.blank(view[cols + ["session_id"]],
                    ["file_name", "agent_id", "customer_id", "team", "severity"])
    st.caption(f"{len(rows):,} sessions, most severe first. Select a row to open it.")
    ev = st.dataframe(
        view, hide_index=True, on_select="rerun", selection_mode="single-row", width="stretch",
        key="sessions_table", height=min(560, 38 + 35 * max(len(view), 1)), column_order=cols,
        column_config={
            "when": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
            "file_name": st.column_config.TextColumn("File", width="medium"),
            "status": st.column_config.TextColumn("Status", width="medium"),
            "agent_id": st.column_config.TextColumn("Agent", width="small"),
            "customer_id": st.column_config.TextColumn("Person", width="small",
                                                       help="Customer or diary person"),
            "team": st.column_config.TextColumn("Team", width="small"),
            "minutes": st.column_config.NumberColumn("Min", format="%.1f", width="small"),
            "dominant": st.column_config.TextColumn("Dominant", width="small"),
            "negative_share": st.column_config.ProgressColumn(
                "Negative", format="percent", min_value=0.0, max_value=1.0, width="small"),
            "alerts": st.column_config.NumberColumn("Alerts", width="small"),
            "severity": st.column_config.TextColumn("Worst", width="small"),
            "categories": st.column_config.ListColumn("Categories", width="medium"),
            "flags": st.column_config.ListColumn("Flags", width="medium"),
            "tags": st.column_config.ListColumn("Tags", width="medium")})
    picked = ev.selection.rows if ev is not None else []
    if picked:
        sid = view.iloc[picked[0]].session_id
        nav.open_session(sid, first_alert.get(sid))


def main() -> None:
    if not ui.page("Overview"):
        return
    k = data.state()
    summary = data.session_summary(k)
    with st.expander("Filters", expanded=True):
        f = filters.widgets(summary, data.summary_options(k), key="ov")
    # With a speaker role chosen, every figure built from segments counts only that role.
    rows = filters.apply(aggregates.restrict_to_roles(summary, data.label_seconds(k),
                                                      f.roles, data.alerts(k)), f)
    kpis(rows)
    if f.roles:
        st.caption(f"Negative share, alerts, the emotion mix and the table count only the "
                   f"speech of: {', '.join(f.roles)}.")
    left, right = st.columns([3, 1])
    period = right.radio("Emotion mix by", ["day", "week"], horizontal=True, key="ov_mix_by")
    mix = aggregates.mix_over_time(data.mix_table(k), rows, len(summary), period, f.roles)
    with left:
        st.subheader("Emotion mix over time")
    if len(mix):
        st.plotly_chart(charts.mix_over_time(mix, ui.lang()), key="ov_mix")
    else:
        st.info("No speech in the selected sessions.")
    st.subheader("Sessions")
    if rows.empty:
        st.info("No session matches these filters. Clear some of them to see more.")
        return
    alerts = aggregates.alerts_of_roles(data.alerts(k), f.roles)
    first = alerts.groupby("session_id").t_s.min().to_dict() if len(alerts) else {}
    table(rows, first)
    with st.expander("Narrowband and wideband audio"):
        by_band(rows)


with ui.guard():
    main()
