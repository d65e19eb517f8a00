"""Plotly figures shared by the pages; every emotion keeps its colour from core.labels.COLORS."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.labels import COLORS, LABELS, display

MAX_POINTS = 1200  # per curve and lane: enough for a screen, light enough to click through
BAR_BASE, BAR_HEIGHT = -0.16, 0.1  # the segment strip drawn under each lane's curves


def _thin(df: pd.DataFrame, n: int = MAX_POINTS) -> pd.DataFrame:
    if len(df) <= n:
        return df
    step = int(np.ceil(len(df) / n))
    return df.iloc[::step]


# A click selects a point; keep every point as it looked instead of dimming the rest.
KEEP_LOOK = dict(selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)))


def _gaps(fr: pd.DataFrame) -> pd.DataFrame:
    """A row of NaNs wherever the curve jumps over silence, so lines do not bridge it."""
    if len(fr) < 3:
        return fr
    t = fr.t_s.to_numpy()
    dt = np.diff(t)
    cut = np.flatnonzero(dt > 3 * np.median(dt))
    if cut.size == 0:
        return fr
    holes = pd.DataFrame({"t_s": (t[cut] + t[cut + 1]) / 2})
    return pd.concat([fr, holes], ignore_index=True).sort_values("t_s", kind="stable")


def timeline(frames: pd.DataFrame, segments: pd.DataFrame, lang: str = "en",
             marker_t: float | None = None, duration_s: float | None = None) -> go.Figure:
    """One lane per speaker: the 9 probability curves, and below them one bar per segment
    coloured by its label, opacity by its confidence. customdata = (time to seek to, row of the
    segment in `segments` or -1)."""
    speakers = list(dict.fromkeys(list(segments.speaker) if len(segments) else []))
    chan_speaker = (segments.drop_duplicates("channel").set_index("channel").speaker
                    if len(segments) else pd.Series(dtype=str))
    if not speakers:
        speakers = ["speaker"]
    fig = make_subplots(rows=len(speakers), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[s.capitalize() for s in speakers])
    for row, sp in enumerate(speakers, start=1):
        chans = [c for c, s in chan_speaker.items() if s == sp]
        fr = _gaps(_thin(frames[frames.channel.isin(chans)].sort_values("t_s"))) \
            if len(frames) else frames
        for lab in LABELS:
            if len(fr) == 0:
                break
            fig.add_trace(go.Scatter(
                x=fr.t_s, y=fr[lab], mode="lines+markers", name=display(lab, lang),
                legendgroup=lab, showlegend=row == 1,
                line=dict(color=COLORS[lab], width=1.4), marker=dict(size=3, color=COLORS[lab]),
                customdata=np.stack([fr.t_s.to_numpy(), np.full(len(fr), -1.0)], axis=1),
                connectgaps=False, **KEEP_LOOK,
                hovertemplate=f"{display(lab, lang)} %{{y:.2f}} at %{{x:.1f}} s<extra></extra>"),
                row=row, col=1)
        seg = segments[segments.speaker == sp]
        if len(seg):
            conf = seg.confidence.clip(0, 1).to_numpy()
            fig.add_trace(go.Bar(
                x=((seg.start_s + seg.end_s) / 2).to_numpy(),
                width=(seg.end_s - seg.start_s).to_numpy(),
                y=np.full(len(seg), BAR_HEIGHT), base=BAR_BASE, name="segments",
                showlegend=False,
                marker=dict(color=[COLORS.get(x, "#999") for x in seg.label],
                            opacity=(0.25 + 0.75 * conf).tolist(), line=dict(width=0)),
                text=[display(x, lang) for x in seg.label], textposition="none",
                hoverinfo="skip"), row=row, col=1)
            # Bars are not click-selectable in every plotly build: a transparent marker at
            # each segment's centre takes the click (and the hover) instead.
            fig.add_trace(go.Scatter(
                x=((seg.start_s + seg.end_s) / 2).to_numpy(),
                y=np.full(len(seg), BAR_BASE + BAR_HEIGHT / 2), mode="markers",
                name="segment", showlegend=False,
                marker=dict(size=14, symbol="square", opacity=0, color="#000"),
                # numbers only: a figure with text in customdata stops reporting clicks once it
                # has been through the cache's pickling
                customdata=np.stack([seg.start_s.to_numpy(),
                                     seg.index.to_numpy().astype(float)], axis=1),
                text=[f"{display(x, lang)} ({c:.2f})" for x, c in zip(seg.label, conf)],
                hovertemplate="%{text} from %{customdata[0]:.1f} s<extra>segment</extra>"),
                row=row, col=1)
        fig.update_yaxes(range=[BAR_BASE - 0.02, 1.02], row=row, col=1,
                         tickvals=[0, 0.5, 1], title_text="p")
    if marker_t is not None:
        fig.add_vline(x=float(marker_t), line=dict(color="#222", width=1.5, dash="dot"))
    fig.update_xaxes(title_text="seconds", row=len(speakers), col=1)
    if duration_s:
        fig.update_xaxes(range=[0, float(duration_s)])
    fig.update_layout(height=230 * len(speakers) + 110, margin=dict(l=10, r=10, t=80, b=10),
                      modebar=dict(orientation="v"),  # kept clear of the legend
                      barmode="overlay", bargap=0, hovermode="closest", clickmode="event+select",
                      # above the first lane's title, whatever the number of lanes
                      legend=dict(orientation="h", yanchor="bottom", x=0,
                                  y=1 + 45 / (230 * len(speakers))))
    return fig


def clicked(point: dict) -> tuple[float, int]:
    """(time to seek to, row of the segment or -1) from a timeline point Streamlit reports.

    customdata arrives as a list, or as an object keyed "0", "1" when plotly sent the numbers
    as a typed array; without it, the point's x is the time.
    """
    cd = point.get("customdata")

    def item(i):
        if isinstance(cd, dict):
            return cd.get(str(i), cd.get(i))
        if isinstance(cd, (list, tuple)) and len(cd) > i:
            return cd[i]
        return None
    t, row = item(0), item(1)
    return (float(point["x"]) if t is None else float(t)), (-1 if row is None else int(row))


def scores_bar(scores, lang: str = "en") -> go.Figure:
    vals = np.asarray(scores, float)
    fig = go.Figure(go.Bar(x=[display(x, lang) for x in LABELS], y=vals,
                           marker_color=[COLORS[x] for x in LABELS],
                           hovertemplate="%{x} %{y:.3f}<extra></extra>"))
    fig.update_layout(height=240, margin=dict(l=10, r=10, t=10, b=10), yaxis_range=[0, 1])
    return fig


def mix_over_time(mix: pd.DataFrame, lang: str = "en") -> go.Figure:
    """Stacked share of speech per label per period."""
    fig = go.Figure()
    for lab in LABELS:
        part = mix[mix.label == lab]
        if len(part) == 0:
            continue
        fig.add_trace(go.Bar(x=part.period, y=part.share, name=display(lab, lang),
                             marker_color=COLORS[lab],
                             hovertemplate=f"{display(lab, lang)} %{{y:.0%}}<extra></extra>"))
    fig.update_layout(barmode="stack", height=300, margin=dict(l=10, r=10, t=10, b=10),
                      yaxis=dict(tickformat=".0%", range=[0, 1]),
                      legend=dict(orientation="h", y=1.12, x=0))
    return fig


def volatility_curve(segments: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    if "rolling_volatility" in segments:
        for sp, part in segments.dropna(subset=["rolling_volatility"]).groupby("speaker"):
            fig.add_trace(go.Scatter(x=part.start_s, y=part.rolling_volatility,
                                     mode="lines+markers", name=sp))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="seconds", yaxis_title="rolling volatility")
    return fig


def label_pie(mix_seconds: pd.Series, lang: str = "en") -> go.Figure:
    labs = [x for x in LABELS if x in mix_seconds.index]
    fig = go.Figure(go.Pie(labels=[display(x, lang) for x in labs],
                           values=[float(mix_seconds[x]) for x in labs], sort=False,
                           marker=dict(colors=[COLORS[x] for x in labs]), hole=0.45))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10))
    return fig


def scatter_map(coords: np.ndarray, labels, hover, lang: str = "en") -> go.Figure:
    fig = go.Figure()
    labels = np.asarray(labels)
    hover = np.asarray(hover)
    for lab in LABELS:
        sel = labels == lab
        if not sel.any():
            continue
        fig.add_trace(go.Scattergl(x=coords[sel, 0], y=coords[sel, 1], mode="markers",
                                   name=display(lab, lang), text=hover[sel],
                                   marker=dict(color=COLORS[lab], size=5, opacity=0.75),
                                   hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="PC 1", yaxis_title="PC 2")
    return fig
