"""Volatility & alerts: volatility per session, agent and person; alerts under thresholds set on
the page; a selected alert opens its session at that moment."""
from __future__ import annotations

import html

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.components import data, nav, ui, whatif


def volatility(metrics: pd.DataFrame, k) -> None:
    # One view at a time: tabs would compute all three on every rerun.
    view = st.segmented_control("Volatility by", ["session", "agent", "person"],
                                default="session", key="vol_view") or "session"
    if view == "session":
        roles = sorted(set(metrics.speaker) - {"all"})
        role = st.radio("Speaker", ["all"] + roles, horizontal=True, key="vol_role",
                        format_func=lambda r: "whole session" if r == "all" else r)
        m = metrics[(metrics.speaker == role) & metrics.volatility.notna()].copy()
        if m.empty:
            st.info("No session has enough segments for a volatility value yet.")
        else:
            m["when"] = pd.to_datetime(m.recorded_at.fillna(m.ingested_at))
            # Plotly renders a little HTML (links included) in hover text: user strings escaped.
            shown = m.assign(**{c: m[c].map(lambda x: x if pd.isna(x) else html.escape(str(x)))
                                for c in ("file_name", "agent_id", "customer_id", "team")})
            fig = px.scatter(shown, x="when", y="volatility", color="team",
                             hover_name="file_name",
                             hover_data=["session_id", "agent_id", "customer_id"], height=320)
            fig.update_layout(margin=dict(l=10, r=10, t=10, b=10))
            st.plotly_chart(fig, key="vol_sessions")
            st.dataframe(m.sort_values("volatility", ascending=False)
                         [["file_name", "when", "agent_id", "customer_id", "volatility",
                           "score_volatility", "trend", "session_id"]].head(200),
                         hide_index=True)
    elif view == "agent":
        m = metrics[(metrics.speaker == "agent") & metrics.agent_id.notna()]
        if m.empty:
            st.info("No agent channels: agent volatility needs stereo calls with an agent role.")
        else:
            g = m.groupby("agent_id").agg(sessions=("session_id", "nunique"),
                                          mean_volatility=("volatility", "mean"),
                                          max_volatility=("volatility", "max")).reset_index()
            g["agent_id"] = g.agent_id.map(lambda x: html.escape(str(x)))
            fig = px.bar(g.sort_values("mean_volatility", ascending=False), x="agent_id",
                         y="mean_volatility", hover_data=["sessions", "max_volatility"],
                         height=300)
            fig.update_layout(margin=dict(l=10, r=10, t=10, b=10))
            st.plotly_chart(fig, key="vol_agents")
    else:
        people(k)


def people(k) -> None:
    ps = data.person_sessions(k)
    if ps.empty:
        st.info("No person has sessions with metrics yet.")
        return
    g = ps.groupby(["person", "role"]).agg(
        sessions=("session_id", "nunique"), mean_volatility=("volatility", "mean"),
        max_volatility=("volatility", "max"), negative_share=("neg_share", "mean"),
        last_seen=("when", "max")).reset_index().sort_values("mean_volatility",
                                                              ascending=False)
    st.dataframe(g, hide_index=True, column_config={
        "mean_volatility": st.column_config.NumberColumn(format="%.3f"),
        "max_volatility": st.column_config.NumberColumn(format="%.3f"),
        "negative_share": st.column_config.NumberColumn(format="%.2f")})
    if st.toggle("Compare each person's latest session with their baseline", key="vol_base"):
        base = data.baselines(k)
        if base.empty:
            st.info("No person has enough sessions for a baseline yet.")
        else:
            st.dataframe(base[["person", "roles", "sessions", "latest_volatility",
                               "baseline_volatility", "volatility_z", "mix_distance",
                               "status", "latest_session_id"]], hide_index=True)


def thresholds(metrics: pd.DataFrame) -> whatif.Thresholds:
    r = data.rules()
    d = whatif.Thresholds()
    if r is not None:
        lq = next((a for a in r.alerts if a.kind == "last_quarter_share"), None)
        vp = next((a for a in r.alerts if a.kind == "volatility_percentile"), None)
        d = whatif.Thresholds(
            volatility_percentile=vp.percentile if vp else d.volatility_percentile,
            negative_last_quarter=lq.min_share if lq else d.negative_last_quarter,
            trend_delta=r.trend_threshold, unreliable_share=r.unreliable_share)
    c = st.columns(5)
    pct = c[0].slider("Volatility percentile", 50.0, 99.0, float(d.volatility_percentile), 1.0,
                      key="th_vol")
    neg = c[1].slider("Negative share, last quarter", 0.1, 1.0,
                      float(d.negative_last_quarter), 0.05, key="th_neg")
    tr = c[2].slider("Worsening by at least", 0.05, 1.0, float(d.trend_delta), 0.05,
                     key="th_trend")
    un = c[3].slider("Unreliable: share to clarify", 0.1, 1.0, float(d.unreliable_share), 0.05,
                     key="th_unrel")
    roles = sorted(set(metrics.speaker) - {"all"})
    watched = c[4].multiselect("Emotion rules watch", roles,
                               default=[x for x in d.roles if x in roles], key="th_roles")
    return whatif.Thresholds(pct, d.min_reference, neg, tr, un, tuple(watched))


def alert_list(k, metrics: pd.DataFrame, summary: pd.DataFrame) -> None:
    th = thresholds(metrics)
    r = data.rules()
    streaks = {a.rule for a in r.alerts if a.kind == "streak"} if r else set()
    found = whatif.evaluate(metrics, data.volatility_peaks(k), data.alerts(k), th, streaks)
    c = st.columns([1, 1, 3])
    sev = c[0].multiselect("Severity", ["high", "medium", "low"], key="al_sev")
    rule = c[1].multiselect("Rule", sorted(set(found.rule)), key="al_rule")
    if sev:
        found = found[found.severity.isin(sev)]
    if rule:
        found = found[found.rule.isin(rule)]
    names = summary.set_index("session_id")
    view = found.assign(file=found.session_id.map(names.file_name),
                        agent=found.session_id.map(names.agent_id),
                        customer=found.session_id.map(names.customer_id))
    st.caption(f"{len(view):,} alerts in {view.session_id.nunique():,} sessions. Streak rules "
               "(consecutive segments) follow emoscope.toml; change them there and run "
               "`emoscope recompute`. Select a row to open the session at that moment.")
    if view.empty:
        st.info("No alert at these thresholds.")
        return
    view = view.head(5000).reset_index(drop=True)
    ev = st.dataframe(view[["severity", "rule", "file", "speaker", "t_s", "detail", "agent",
                            "customer", "session_id"]], hide_index=True, on_select="rerun",
                      selection_mode="single-row", key="alerts_table",
                      column_config={"t_s": st.column_config.NumberColumn("At (s)",
                                                                          format="%.1f")})
    picked = ev.selection.rows if ev is not None else []
    if picked:
        a = view.iloc[picked[0]]
        nav.open_session(a.session_id, float(a.t_s))


def main() -> None:
    if not ui.page("Volatility & alerts"):
        return
    k = data.state()
    metrics = data.session_metrics(k)
    if metrics.empty:
        st.info("Volatility and alerts appear once the analytics tables exist: run "
                f"`emoscope recompute --db {k.path}` (or re-ingest with this version).")
        return
    summary = data.session_summary(k)
    st.subheader("Volatility")
    volatility(metrics, k)
    st.subheader("Alerts")
    alert_list(k, metrics, summary)


with ui.guard():
    main()
