"""Patterns: the recurring kinds of moment `emoscope patterns` found among the stored segments
(clusters of their embeddings), as far as the viewer's scope reaches: how big each is, which
emotions it holds, who and which teams it occurs in, how often week by week, a few playable
moments that represent it, and a map of the moments (a sample, drawn with WebGL)."""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.index import patterns as core_patterns
from dashboard.components import data, player, ui

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _top(d: dict, n: int = 3) -> str:
    return ", ".join(f"{ui.md(k)} ({v})" for k, v in list(d.items())[:n])


def overview(summary: pd.DataFrame) -> int | None:
    """The table of patterns; returns the one picked for the details below."""
    rows = pd.DataFrame({
        "Pattern": summary.pattern.map(lambda p: f"P{p + 1}"),
        "Moments": summary["size"], "Share": summary["share"] * 100,
        "Mostly": summary.top_label.map(ui.label),
        "Of it": summary.top_label_share,
        "Speakers": summary.speakers.map(lambda d: ", ".join(map(str, d))),
        "Teams": summary.teams.map(lambda d: ", ".join(map(str, d))),
        "Sessions": summary.sessions,
        "Last seen": pd.to_datetime(summary.last_seen).dt.date,
    })
    st.dataframe(ui.blank(rows), hide_index=True, width="stretch", column_config={
        "Share": st.column_config.ProgressColumn(format="%.0f%%", min_value=0, max_value=100),
        "Of it": st.column_config.NumberColumn(format="%.2f")})
    choices = summary.pattern.tolist()
    return st.selectbox("Pattern", choices, format_func=lambda p: f"P{p + 1}",
                        key="pat_pick") if choices else None


def weekly_chart(weekly: pd.DataFrame, chosen: int | None) -> go.Figure:
    fig = go.Figure()
    for p, part in weekly.groupby("pattern"):
        hi = p == chosen
        fig.add_trace(go.Scatter(
            x=part.week, y=part.share, mode="lines+markers",
            name=f"P{p + 1}", line=dict(width=3 if hi else 1,
                                        color=PALETTE[p % len(PALETTE)]),
            marker=dict(size=7 if hi else 4), opacity=1.0 if hi or chosen is None else 0.45,
            hovertemplate=f"P{p + 1}" + " · week of %{x|%d %b}: %{y:.0%}<extra></extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(type="date", tickformat="%d %b %Y", title="week of"),
                      yaxis=dict(title="share of the week's moments", tickformat=".0%",
                                 rangemode="tozero"))
    return fig


def moment_map(sample: pd.DataFrame, chosen: int | None) -> go.Figure:
    """Scattergl per pattern: WebGL keeps 20,000 points responsive."""
    fig = go.Figure()
    for p, part in sample.groupby("pattern"):
        hover = [html.escape(f"P{p + 1} · {lab} · {sp} · {g}") for lab, sp, g in
                 zip(part.label, part.speaker, part.segment_id)]
        fig.add_trace(go.Scattergl(
            x=part.x, y=part.y, mode="markers", name=f"P{p + 1}", text=hover,
            hovertemplate="%{text}<extra></extra>",
            marker=dict(size=7 if p == chosen else 5, color=PALETTE[p % len(PALETTE)],
                        opacity=0.9 if p == chosen or chosen is None else 0.45)))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="PC 1", yaxis_title="PC 2")
    return fig


def details(k, p: int, summary: pd.DataFrame, segs: pd.DataFrame) -> None:
    row = summary.set_index("pattern").loc[p]
    c = st.columns(4)
    c[0].metric("Moments", f"{int(row['size']):,}")
    c[1].metric("Sessions", f"{int(row.sessions):,}")
    c[2].metric("Mostly", ui.label(row.top_label), f"{row.top_label_share:.0%}",
                delta_color="off")
    c[3].metric("Mean length", f"{row.mean_duration_s:.1f} s")
    mix = core_patterns.label_mix(segs.pattern.to_numpy(), segs).loc[p]
    mix = mix[mix > 0].sort_values(ascending=False)
    st.markdown("**Label mix:** " + " · ".join(f"{ui.label(lab)} {v:.0%}"
                                                 for lab, v in mix.items()))
    st.markdown(f"**Speakers:** {_top(row.speakers)}  \n**Teams:** {_top(row.teams)}  \n"
                f"**Agents:** {_top(row.agents)} ({int(row.distinct_agents)} in all)  \n"
                f"**Customers / people:** {_top(row.customers)} "
                f"({int(row.distinct_customers)} in all)")


def representatives(k, p: int) -> None:
    reps = data.pattern_representatives(k)
    reps = reps[reps.pattern == p].sort_values("representative")
    if reps.empty:
        st.caption("None of this pattern's representative moments is in your scope.")
        return
    for i, r in enumerate(reps.itertuples(index=False)):
        player.moment(k, r, st.columns([3, 3, 1]), f"pat_open_{i}",
                      f"#{int(r.representative)} closest · cosine to the pattern's centre "
                      f"{r.similarity:.3f} · `{r.segment_id}`")

def main() -> None:
    if not ui.page("Patterns"):
        return
    k = data.state()
    runs = data.patterns(k)
    if runs.empty:
        st.info("No patterns yet: `emoscope patterns` clusters the stored moments into "
                "recurring patterns (and again whenever it is run).")
        return
    segs = data.pattern_segments(k)
    first = runs.iloc[0]
    st.caption(f"{int(first.k)} patterns among {int(runs['size'].sum()):,} moments of "
               f"`{ui.md(first.model)}`, found {pd.Timestamp(first.created_at):%Y-%m-%d %H:%M} "
               f"(run `{first.run_id}`); {len(segs):,} of them in the sessions you may see.")
    if segs.empty:
        st.info("None of the clustered moments is in the sessions you may see.")
        return
    labels = segs.pattern.to_numpy()
    summary = core_patterns.summarise(labels, segs)
    chosen = overview(summary)
    st.subheader("Week by week")
    st.caption("Each pattern's share of the week's moments, so a busy week does not look like "
               "a rising pattern.")
    st.plotly_chart(weekly_chart(core_patterns.weekly(labels, segs), chosen), key="pat_weekly")
    if chosen is not None:
        st.subheader(f"Pattern P{chosen + 1}")
        details(k, chosen, summary, segs)
        st.markdown("**Representative moments** (closest to the pattern's centre)")
        representatives(k, chosen)
    st.subheader("Map of moments")
    sample = data.pattern_map(k)
    st.caption(f"A sample of {len(sample):,} of {len(segs):,} moments, placed by the first two "
               "principal components of their embeddings, coloured by pattern.")
    st.plotly_chart(moment_map(sample, chosen), key="pat_map")


with ui.guard():
    main()
