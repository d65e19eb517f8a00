"""Agents: one row per agent in the window — calls, talk share, the customer's negative share in
the first and last quarter, alerts by severity, interruptions and overlap per call, volatility —
each beside the median of the agent's team; an agent's calls worst first, a click opens the
call at its first alert."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from core.analysis import scorecards
from dashboard.components import charts, data, filters, nav, ui

PICK_KEY = "ag_agent"  # the agent whose calls are listed
# figure → (what the chart calls it, number format)
FIGURES = {"cust_neg_last": ("Customer negative, last quarter", ".0%"),
           "cust_neg_change": ("Customer negative: last − first quarter", "+.0%"),
           "talk_share": ("Agent's share of the talk", ".0%"),
           "interruptions_per_call": ("Agent's interruptions per call", ".1f"),
           "overlap_per_call": ("Overlap per call (s)", ".1f"),
           "mean_volatility": ("Mean call volatility", ".3f")}


def _new_click(name: str, value) -> bool:
    """True once per new selection of a chart or table (a selection stays across reruns)."""
    if value is None or st.session_state.get(f"_seen_{name}") == value:
        return False
    st.session_state[f"_seen_{name}"] = value
    return True


SHARES = ("talk_share", "cust_neg_first", "cust_neg_last", "cust_neg_change")


def scorecard(card: pd.DataFrame) -> None:
    """The table, sortable by any column; its figures as values or as the difference from
    the team's median (one table that fits the page instead of two columns per figure)."""
    st.session_state.setdefault("ag_show", "values")
    show = st.segmented_control("Show", ["values", "difference from the team median"],
                                key="ag_show") or "values"
    delta = show != "values"
    view = card.assign(team=card.team.fillna(""))
    figures = list(scorecards.SCORE_FIGURES)
    for c in figures:
        v = view[f"{c}_vs_team"] if delta else view[c]
        view[c] = v * 100 if c in SHARES else v  # shares read as percentages
    pct = "%+.0f pt" if delta else "%.0f%%"
    col = lambda label, fmt, help=None: st.column_config.NumberColumn(  # noqa: E731
        label, format=fmt, width="small", help=help)
    ev = st.dataframe(
        view, hide_index=True, width="stretch", on_select="rerun",
        selection_mode="single-row", key="ag_table",
        column_order=["agent_id", "team", "calls", "talk_share", "cust_neg_first",
                      "cust_neg_last", "cust_neg_change", "high", "medium", "low",
                      "interruptions_per_call", "overlap_per_call", "mean_volatility"],
        column_config={
            "agent_id": st.column_config.TextColumn("Agent", width="small"),
            "team": st.column_config.TextColumn("Team", width="small"),
            "calls": col("Calls", "%d"), "talk_share": col("Talk share", pct),
            "cust_neg_first": col("Cust. neg. first ¼", pct),
            "cust_neg_last": col("Cust. neg. last ¼", pct),
            "cust_neg_change": col("Change (pt)", "%+.0f"),
            "high": col("High", "%d"), "medium": col("Medium", "%d"), "low": col("Low", "%d"),
            "interruptions_per_call": col(
                "Agent interr. / call", "%+.1f" if delta else "%.1f",
                "Times per call the agent started speaking before the customer had finished "
                "(the customer's interruptions of the agent are not counted here)."),
            "overlap_per_call": col("Overlap / call (s)", "%+.1f" if delta else "%.1f"),
            "mean_volatility": col("Volatility", "%+.3f" if delta else "%.3f")})
    rows = ev.selection.rows if ev is not None else []
    if rows and _new_click("ag_table", tuple(rows)):
        st.session_state[PICK_KEY] = card.iloc[rows[0]].agent_id
        st.rerun()


def chart(card: pd.DataFrame) -> None:
    st.session_state.setdefault("ag_figure", "cust_neg_last")
    figure = st.segmented_control("Compare", list(FIGURES), key="ag_figure",
                                  format_func=lambda k: FIGURES[k][0]) or "cust_neg_last"
    title, fmt = FIGURES[figure]
    ev = st.plotly_chart(charts.scorecard_bars(card, figure, title, fmt), key="ag_chart",
                         on_select="rerun", selection_mode=("points",))
    row = charts.picked_row(ev)
    if row is not None and _new_click("ag_chart", (figure, row)):
        st.session_state[PICK_KEY] = card.iloc[row].agent_id
        st.rerun()


def calls(k, f, agent: str) -> None:
    rows = data.session_table(k, replace(f, agent=agent))
    if rows.empty:
        st.info(f"No calls of {ui.md(agent)} in this window.")
        return
    rows = scorecards.worst_first(rows)
    st.caption(f"{ui.plural(len(rows), 'call')} of **{ui.md(agent)}**, worst first (worst alert, number of alerts, "
               "the customer's last-quarter negative share). Select a call to open it at its "
               "first alert.")
    view = rows.assign(first_alert=rows.first_alert_t_s.map(ui.fmt_clock),
                       minutes=rows.duration_s / 60, customer_neg_first=rows.customer_neg_first
                       * 100, customer_neg_last=rows.customer_neg_last * 100,
                       talk_share=rows.talk_share * 100)
    cols = ["when", "file_name", "customer_id", "minutes", "severity", "alerts", "first_alert",
            "customer_neg_first", "customer_neg_last", "talk_share", "interruptions",
            "overlap_s", "volatility"]
    num = lambda label, fmt: st.column_config.NumberColumn(label, format=fmt,  # noqa: E731
                                                           width="small")
    ev = st.dataframe(
        ui.blank(view[cols + ["session_id"]]), hide_index=True, width="stretch",
        on_select="rerun", selection_mode="single-row", key=f"ag_calls_{agent}",
        column_order=cols, column_config={
            "when": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
            "file_name": st.column_config.TextColumn("File", width="medium"),
            "customer_id": st.column_config.TextColumn("Customer", width="small"),
            "minutes": num("Minutes", "%.1f"),
            "severity": st.column_config.TextColumn("Worst", width="small"),
            "alerts": num("Alerts", "%d"),
            "first_alert": st.column_config.TextColumn("First alert at", width="small"),
            "customer_neg_first": num("Cust. neg. first ¼", "%.0f%%"),
            "customer_neg_last": num("Cust. neg. last ¼", "%.0f%%"),
            "talk_share": num("Agent talk share", "%.0f%%"),
            "interruptions": num("Interruptions", "%d"),
            "overlap_s": num("Overlap (s)", "%.1f"),
            "volatility": num("Volatility", "%.3f")})
    picked = ev.selection.rows if ev is not None else []
    if picked:
        r = rows.iloc[picked[0]]
        t = r.first_alert_t_s
        nav.open_session(r.session_id, None if pd.isna(t) else float(t))


def main() -> None:
    if not ui.page("Agents"):
        return
    k = data.state()
    opts = data.summary_options(k)
    c = st.columns([3, 1, 1])
    since, until = filters.period("ag", opts["dates"], c[0])
    team = filters.choose(c[1], "Team", opts["teams"], "ag_team")
    cats = filters.categories(c[2], opts, "ag_category")
    f = filters.session_filter(since, until, team=team, categories=cats)
    card = data.agent_scorecards(k, f)
    if card.empty:
        st.info(filters.empty_reason(data.summary_options(k)["dates"]) + " Agents come from "
                "the manifest's `agent_id` (or the Upload page's Agent field).")
        return
    st.caption(f"{ui.plural(len(card), 'agent')}, {ui.plural(int(card.calls.sum()), 'call')}. "
               "Each figure beside the median of the agents of the same team (± team); click an agent, in the chart "
               "or the table, to list their calls.")
    chart(card)
    scorecard(card)
    agent = st.session_state.get(PICK_KEY)
    if agent not in set(card.agent_id):
        worst = card.assign(_k=card.high * 100 + card.medium * 10 + card.low) \
            .sort_values(["_k", "cust_neg_last"], ascending=False)
        agent = worst.agent_id.iloc[0]
    st.subheader(f"Calls of {ui.md(agent)}")
    calls(k, f, agent)


with ui.guard():
    main()
