"""Volatility & alerts: the alerts of a window (period, agent, team, person, role), judged by
the stored rules' own code, with thresholds that can be moved on the page; the suggested
response beside each; a selected alert opens its session at the offending speaker's segment.
Volatility per session, agent and person below."""
from __future__ import annotations

import html

import pandas as pd
import plotly.express as px
import streamlit as st

from core.analysis import aggregates
from core.analysis.rules import SEVERITIES, SEVERITY_RANK
from dashboard.components import data, filters, nav, ui, whatif


def window(k):
    """The filter widgets; returns (core filter for the sessions, roles, text for captions)."""
    opts = data.summary_options(k)
    c = st.columns([3, 1, 1, 1, 1, 1])
    since, until = filters.period("al", opts["dates"], c[0])
    agent = filters.choose(c[1], "Agent", opts["agents"], "al_agent")
    team = filters.choose(c[2], "Team", opts["teams"], "al_team")
    person = filters.choose(c[3], "Customer / person", opts["people"], "al_person")
    roles = filters.pick_many(c[4], "Speaker role", opts["roles"], "al_role")
    cats = filters.categories(c[5], opts, "al_category")
    return filters.session_filter(since, until, agent, team, person, cats), roles


def alert_list(k, f, roles: list[str]) -> None:
    rules = data.rules()
    if rules is None:
        st.error("emoscope.toml cannot be read, so alerts cannot be judged here; "
                 "`emoscope recompute` names the problem.")
        return
    with st.expander("What if: move the thresholds", expanded=False):
        judged, set_name = whatif.sliders(rules, data.summary_options(k)["roles"])
    same = judged == rules
    stale = data.stale_sessions(k, rules.full_digest, rules) if same else 0
    if same and not stale:
        # The stored alerts: what re-judging with the rules file gives back (the code path
        # below; tests/test_rejudge.py holds the two equal), read instead of recomputed.
        found = data.window_alerts(k, f)
        said = "These are the stored alerts, judged with emoscope.toml. "
    else:
        found = data.judged_alerts(k, f, judged.full_digest, judged)
        said = (f"Judged with the thresholds above (set `{set_name}`); the stored alerts "
                "change only with emoscope.toml and `emoscope recompute`. " if not same else
                f"{stale:,} sessions were stored under other rules than emoscope.toml holds "
                "now; these alerts are judged with the file (run `emoscope recompute` to "
                "store them). ")
    found = aggregates.alerts_of_roles(found, roles)
    c = st.columns([1, 1, 3])
    sev = c[0].multiselect("Severity", list(reversed(SEVERITIES)), key="al_sev")
    rule = c[1].multiselect("Rule", sorted(set(found.rule)) if len(found) else [],
                            key="al_rule")
    if sev:
        found = found[found.severity.isin(sev)]
    if rule:
        found = found[found.rule.isin(rule)]
    if len(found):  # the most severe first, then the newest
        found = found.assign(
            _rank=found.severity.map(SEVERITY_RANK).fillna(0),
            _when=pd.to_datetime(found.recorded_at.fillna(found.ingested_at))).sort_values(
            ["_rank", "_when", "session_id", "t_s"], ascending=[False, False, True, True],
            kind="stable").drop(columns=["_rank", "_when"])
    n_sessions = found.session_id.nunique() if len(found) else 0
    st.caption(
        f"{ui.plural(len(found), 'alert')} in {ui.plural(n_sessions, 'session')}, the most "
        f"severe first. {said}Select a row to open the session where the speaker's alert "
        "starts.")
    if found.empty:
        st.info("No alert in this window at these thresholds.")
        return
    view = found.head(5000).reset_index(drop=True)
    view = view.assign(
        at=view.t_s.map(ui.fmt_clock), emotion=view.emotion.map(
            lambda x: ui.label(x) if isinstance(x, str) else ""),
        response=[ui.response(e, z) for e, z in zip(view.suggested_response,
                                                     view.suggested_response_zh)],
        who=[" → ".join(x for x in (a, c) if isinstance(x, str) and x)
             for a, c in zip(view.agent_id, view.customer_id)],
        when=pd.to_datetime(view.recorded_at.fillna(view.ingested_at)))
    cols = ["severity", "rule", "file_name", "speaker", "at", "emotion", "response", "detail",
            "who", "when"]
    small = lambda label: st.column_config.TextColumn(label, width="small")  # noqa: E731
    ev = st.dataframe(
        ui.blank(view[cols + ["session_id"]]), hide_index=True, on_select="rerun",
        selection_mode="single-row", key="alerts_table", width="stretch", column_order=cols,
        column_config={"severity": small("Severity"),
                       "rule": st.column_config.TextColumn("Rule", width="medium"),
                       "when": st.column_config.DatetimeColumn("When", format="MM-DD HH:mm",
                                                               width="small"),
                       "file_name": st.column_config.TextColumn("File", width="medium"),
                       "who": st.column_config.TextColumn("Agent → person", width="small"),
                       "speaker": small("Speaker"), "at": small("At"),
                       "emotion": small("Emotion"),
                       "response": st.column_config.TextColumn("Suggested response",
                                                               width="medium"),
                       "detail": st.column_config.TextColumn("Why", width="large")})
    picked = ev.selection.rows if ev is not None else []
    if picked:
        a = view.iloc[picked[0]]
        nav.open_session(a.session_id, float(a.t_s))


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
            return
        m["when"] = pd.to_datetime(m.recorded_at.fillna(m.ingested_at))
        # Plotly renders a little HTML (links included) in hover text: user strings escaped.
        shown = m.assign(**{c: m[c].map(lambda x: x if pd.isna(x) else html.escape(str(x)))
                            for c in ("file_name", "agent_id", "customer_id", "team")})
        fig = px.scatter(shown, x="when", y="volatility", color="team", hover_name="file_name",
                         hover_data=["session_id", "agent_id", "customer_id"], height=320)
        fig.update_layout(margin=dict(l=10, r=10, t=10, b=10))
        st.plotly_chart(fig, key="vol_sessions")
        st.dataframe(ui.blank(m.sort_values("volatility", ascending=False)
                              [["file_name", "when", "agent_id", "customer_id", "volatility",
                                "score_volatility", "trend", "session_id"]].head(200)),
                     hide_index=True, width="stretch")
    elif view == "agent":
        m = metrics[(metrics.speaker == "agent") & metrics.agent_id.notna()]
        if m.empty:
            st.info("No agent channels: agent volatility needs stereo calls with an agent role.")
            return
        g = m.groupby("agent_id").agg(sessions=("session_id", "nunique"),
                                      mean_volatility=("volatility", "mean"),
                                      max_volatility=("volatility", "max")).reset_index()
        g["agent_id"] = g.agent_id.map(lambda x: html.escape(str(x)))
        fig = px.bar(g.sort_values("mean_volatility", ascending=False), x="agent_id",
                     y="mean_volatility", hover_data=["sessions", "max_volatility"], height=300)
        fig.update_layout(margin=dict(l=10, r=10, t=10, b=10))
        st.plotly_chart(fig, key="vol_agents")
    else:
        people(k, set(metrics.session_id))


ROLE_NAMES = {"speaker": "diary people (one voice)", "customer": "customers",
              "agent": "agents"}


def people(k, ids: set[str]) -> None:
    ps = data.person_sessions(k)
    ps = ps[ps.session_id.isin(ids)] if len(ps) else ps
    if ps.empty:
        st.info("No person has sessions with metrics in this window.")
        return
    roles = [r for r in ROLE_NAMES if r in set(ps.role)]
    role = st.radio("Who", roles, horizontal=True, key="vol_people_role",
                    format_func=ROLE_NAMES.get)
    g = ps[ps.role == role].groupby("person").agg(
        sessions=("session_id", "nunique"), mean_volatility=("volatility", "mean"),
        max_volatility=("volatility", "max"), negative_share=("neg_share", "mean"),
        last_seen=("when", "max")).reset_index().sort_values("mean_volatility",
                                                              ascending=False)
    ev = st.dataframe(g, hide_index=True, width="stretch", on_select="rerun",
                      selection_mode="single-row", key="vol_people", column_config={
                          "mean_volatility": st.column_config.NumberColumn(format="%.3f"),
                          "max_volatility": st.column_config.NumberColumn(format="%.3f"),
                          "negative_share": st.column_config.NumberColumn(format="%.2f")})
    st.caption("Select a person to follow them over time on the Person page.")
    picked = ev.selection.rows if ev is not None else []
    if picked:
        nav.open_person(g.iloc[picked[0]].person)


def main() -> None:
    if not ui.page("Volatility & alerts"):
        return
    k = data.state()
    metrics = data.session_metrics(k)
    if metrics.empty:
        st.info("Volatility and alerts appear once the analytics tables exist: run "
                f"`emoscope recompute --db {k.path}` (or re-ingest with this version).")
        return
    f, roles = window(k)
    inside = set(data.session_table(k, f).session_id)
    if not inside:  # say why: nothing in the window, not "no alert" or "too few segments"
        st.info(filters.empty_reason(data.summary_options(k)["dates"]))
        return
    st.subheader("Alerts")
    alert_list(k, f, roles)
    st.subheader("Volatility")
    volatility(metrics[metrics.session_id.isin(inside)], k)


with ui.guard():
    main()
