"""Plotly figures shared by the pages; every emotion keeps its colour from core.base.labels.COLORS."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.base.labels import COLORS, LABELS, display

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
    voice = prosody_curves(segments)
    # Each speaker's lane of emotions, and under it (where prosody was measured) their voice.
    lanes = [(sp, kind) for sp in speakers
             for kind in ("emotion", "voice") if kind == "emotion" or len(voice)]
    heights = [EMOTION_LANE if kind == "emotion" else VOICE_LANE for _, kind in lanes]
    # Room for each lane's title above it (the voice lanes make the figure taller).
    spacing = 0.06 if not len(voice) else min(0.1, 50 / sum(heights))
    fig = make_subplots(rows=len(lanes), cols=1, shared_xaxes=True, vertical_spacing=spacing,
                        row_heights=heights,
                        specs=[[{"secondary_y": kind == "voice"}] for _, kind in lanes],
                        subplot_titles=[sp.capitalize() if kind == "emotion"
                                        else f"{sp.capitalize()}: pitch and loudness"
                                        for sp, kind in lanes])
    for row, (sp, kind) in enumerate(lanes, start=1):
        if kind == "voice":
            chans = [c for c, s in chan_speaker.items() if s == sp]
            _voice_lane(fig, voice[voice.channel.isin(chans)], row, first=row == 2)
            continue
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
    fig.update_xaxes(title_text="seconds", row=len(lanes), col=1)
    if duration_s:
        fig.update_xaxes(range=[0, float(duration_s)])
    total = sum(heights)
    fig.update_layout(height=total + 110, margin=dict(l=10, r=10, t=80, b=10),
                      modebar=dict(orientation="v"),  # kept clear of the legend
                      barmode="overlay", bargap=0, hovermode="closest", clickmode="event+select",
                      # above the first lane's title, whatever the number of lanes
                      legend=dict(orientation="h", yanchor="bottom", x=0,
                                  y=1 + 45 / total))
    return fig


EMOTION_LANE, VOICE_LANE = 230, 130  # pixels
PITCH_COLOR, LOUDNESS_COLOR = "#1f3b73", "#b8860b"


def prosody_curves(segments: pd.DataFrame) -> pd.DataFrame:
    """The segments' pitch and loudness curves (core.analysis.prosody.curves), unvoiced pitch as gaps."""
    from core.analysis.prosody import curves
    out = curves(segments)
    if len(out):
        out["pitch_hz"] = out.pitch_hz.where(out.pitch_hz > 0)
    return out


def _voice_lane(fig: go.Figure, v: pd.DataFrame, row: int, first: bool) -> None:
    """Pitch (Hz, left axis) and loudness (dBFS, right axis) under a speaker's emotions; a
    click on either seeks there, as on the emotion curves."""
    v = _gaps(_thin(v.sort_values("t_s"))) if len(v) else v
    if len(v):
        seek = np.stack([v.t_s.to_numpy(), np.full(len(v), -1.0)], axis=1)
        fig.add_trace(go.Scatter(
            x=v.t_s, y=v.pitch_hz, mode="lines+markers", name="pitch (Hz)",
            legendgroup="pitch", showlegend=first, connectgaps=False, customdata=seek,
            line=dict(color=PITCH_COLOR, width=1.4), marker=dict(size=3, color=PITCH_COLOR),
            hovertemplate="pitch %{y:.0f} Hz at %{x:.1f} s<extra></extra>", **KEEP_LOOK),
            row=row, col=1, secondary_y=False)
        fig.add_trace(go.Scatter(
            x=v.t_s, y=v.loudness_dbfs, mode="lines", name="loudness (dBFS)",
            legendgroup="loudness", showlegend=first, connectgaps=False, customdata=seek,
            line=dict(color=LOUDNESS_COLOR, width=1.2, dash="dot"),
            hovertemplate="loudness %{y:.1f} dBFS at %{x:.1f} s<extra></extra>", **KEEP_LOOK),
            row=row, col=1, secondary_y=True)
    fig.update_yaxes(title_text="Hz", row=row, col=1, secondary_y=False)
    top = float(np.nanmax(v.loudness_dbfs)) if len(v) and v.loudness_dbfs.notna().any() else 0.0
    # The speech's own 40 dB: a pause's floor would squeeze it flat.
    fig.update_yaxes(title_text="dBFS", row=row, col=1, secondary_y=True, showgrid=False,
                     range=[top - 40, top + 2])


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


MARKS = {"query": dict(symbol="x", size=14, color="black"),
         "results": dict(symbol="circle-open", size=12, color="black",
                         line=dict(width=2, color="black"))}


def scatter_map(coords: np.ndarray, labels, hover, lang: str = "en", marks=()) -> go.Figure:
    """The map of moments coloured by label; `marks`: (name, (n, 2) places) drawn on top
    (the Similar page's query and results)."""
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
    for name, xy in marks:
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        if xy.size:
            fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=name,
                                     marker=MARKS.get(name, {}), hoverinfo="name"))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="PC 1", yaxis_title="PC 2")
    return fig


OUTSIDE = "#c0392b"


def scorecard_bars(card: pd.DataFrame, figure: str, title: str, fmt: str = ".2f") -> go.Figure:
    """One bar per agent for a scorecard figure, and a marker at the median of the agent's
    team. customdata = row of the agent in `card` (a click selects the agent)."""
    median = card[figure] - card[f"{figure}_vs_team"]
    # Plotly renders a little HTML (links included) in labels and hover text: names escaped.
    agents = card.agent_id.map(lambda x: html.escape(str(x)))
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=agents, y=card[figure], name=title, marker_color="#34495e",
        customdata=np.arange(len(card)).astype(float),
        text=card.team.fillna("").map(lambda x: html.escape(str(x))),
        hovertemplate=f"%{{x}} (%{{text}}): %{{y:{fmt}}}<extra></extra>", **KEEP_LOOK))
    fig.add_trace(go.Scatter(
        x=agents, y=median, mode="markers", name="team median",
        marker=dict(symbol="line-ew-open", size=36, line=dict(width=3, color=OUTSIDE)),
        customdata=np.arange(len(card)).astype(float),
        hovertemplate=f"team median %{{y:{fmt}}}<extra></extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), clickmode="event+select",
                      legend=dict(orientation="h", y=1.12, x=0), yaxis_title=title)
    return fig


def journey(j: pd.DataFrame, lang: str = "en", mix_limit: float | None = None) -> go.Figure:
    """A person's entries: negative share and volatility each beside its baseline (mean ± z·sd
    of the entries before it, a grey bar at the entry), the mix distance against its limit, and
    each entry's emotion mix. Entries that depart from their baseline are ringed.
    customdata = row in `j`."""
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        row_heights=[0.3, 0.25, 0.18, 0.27],
                        subplot_titles=["Negative share", "Volatility",
                                        "Mix distance from the usual mix", "Emotion mix"])
    x = pd.to_datetime(j["when"])
    rows = np.arange(len(j)).astype(float)
    out = j.departs.astype(bool).to_numpy()
    for r, col in ((1, "neg_share"), (2, "volatility"), (3, "mix_distance")):
        y = pd.to_numeric(j[col], errors="coerce")
        if f"baseline_{col}" in j:
            # the baseline each entry is judged against: its mean and band, drawn at the entry
            mean = pd.to_numeric(j[f"baseline_{col}"], errors="coerce")
            lo = pd.to_numeric(j[f"{col}_lo"], errors="coerce")
            hi = pd.to_numeric(j[f"{col}_hi"], errors="coerce")
            fig.add_trace(go.Scatter(
                x=x, y=mean, mode="markers", name="baseline (mean ± z·sd)", showlegend=r == 1,
                marker=dict(symbol="line-ew", size=22, line=dict(width=2, color="#95a5a6")),
                error_y=dict(type="data", symmetric=False, array=(hi - mean).fillna(0),
                             arrayminus=(mean - lo).fillna(0), color="#bdc3c7", thickness=10,
                             width=0),
                hovertemplate="baseline %{y:.2f}<extra></extra>"), row=r, col=1)
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=col, showlegend=False, customdata=rows,
            line=dict(color="#34495e", width=1.5), marker=dict(size=9, color="#34495e"),
            text=j.status, hovertemplate="%{x|%Y-%m-%d %H:%M}: %{y:.2f}<br>%{text}"
                                         "<extra></extra>", **KEEP_LOOK), row=r, col=1)
        fig.add_trace(go.Scatter(
            x=x[out], y=y[out], mode="markers", name="departs from baseline",
            showlegend=r == 1, customdata=rows[out], hoverinfo="skip",
            marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=2, color=OUTSIDE)),
            **KEEP_LOOK), row=r, col=1)
    if mix_limit is not None:  # after the traces: plotly skips lines on empty subplots
        fig.add_hline(y=mix_limit, line=dict(color="#7f8c8d", dash="dash"), row=3, col=1)
    shares = np.stack([np.asarray(m, float) for m in j.mix]) if len(j) else np.zeros((0, 9))
    for i, lab in enumerate(LABELS):
        if len(j) and shares[:, i].any():
            fig.add_trace(go.Bar(x=x, y=shares[:, i], name=display(lab, lang),
                                 marker_color=COLORS[lab], customdata=rows, legendgroup=lab,
                                 hovertemplate=f"{display(lab, lang)} %{{y:.0%}}<extra></extra>"),
                          row=4, col=1)
    fig.update_layout(barmode="stack", height=760, margin=dict(l=10, r=10, t=40, b=10),
                      hovermode="closest", clickmode="event+select",
                      legend=dict(orientation="h", y=1.06, x=0))
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    fig.update_yaxes(range=[0, 1.05], row=3, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=4, col=1)
    # one tick per entry: the axis reads as the diary's dates, not as a calendar grid
    fig.update_xaxes(tickvals=x, ticktext=[f"{t:%b %d}" for t in x], row=4, col=1)
    return fig


# Colours of the fused states (core/analysis/fusion.TINTS, as the Session page's badges).
FUSED_COLORS = {"red": "#d62728", "violet": "#9467bd", "orange": "#ff7f0e", "green": "#2ca02c",
                "gray": "#7f7f7f", "blue": "#1f77b4"}


def words_and_voice(w: pd.DataFrame, lang: str = "en") -> go.Figure:
    """A person's entries: the share of each entry's speech in a distress state (voice and
    words fused, core/analysis/fusion) beside the baseline of the entries before it (mean ± z·sd, a
    grey bar), each point coloured by the entry's most frequent fused state, ringed when above
    the band. customdata = row in `w`."""
    from core.analysis import fusion
    x = pd.to_datetime(w["when"])
    rows = np.arange(len(w)).astype(float)
    mean = pd.to_numeric(w.baseline_distress, errors="coerce")
    lo = pd.to_numeric(w.distress_lo, errors="coerce")
    hi = pd.to_numeric(w.distress_hi, errors="coerce")
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=x, y=mean, mode="markers", name="baseline (mean ± z·sd)",
        marker=dict(symbol="line-ew", size=22, line=dict(width=2, color="#95a5a6")),
        error_y=dict(type="data", symmetric=False, array=(hi - mean).fillna(0),
                     arrayminus=(mean - lo).fillna(0), color="#bdc3c7", thickness=10, width=0),
        hovertemplate="baseline %{y:.0%}<extra></extra>"))
    y = pd.to_numeric(w.distress, errors="coerce")
    fused = w.fused.fillna("unclear")
    colors = [FUSED_COLORS[fusion.TINTS.get(f, "gray")] for f in fused]
    words = [f"{v:+.2f}" if pd.notna(v) else "—" for v in pd.to_numeric(w.words,
                                                                         errors="coerce")]
    text = [f"{fusion.display(f, lang)} · voice {display(v, lang) if isinstance(v, str) else '—'}"
            f" · words {s}" for f, v, s in zip(fused, w.voice, words)]
    fig.add_trace(go.Scatter(
        x=x, y=y, mode="lines+markers", name="distress share", customdata=rows, text=text,
        line=dict(color="#34495e", width=1.5), marker=dict(size=11, color=colors),
        hovertemplate="%{x|%Y-%m-%d}: %{y:.0%}<br>%{text}<extra></extra>", **KEEP_LOOK))
    out = w.distress_departs.astype(bool).to_numpy()
    fig.add_trace(go.Scatter(
        x=x[out], y=y[out], mode="markers", name="above baseline", customdata=rows[out],
        hoverinfo="skip", marker=dict(size=20, color="rgba(0,0,0,0)",
                                      line=dict(width=2, color=OUTSIDE)), **KEEP_LOOK))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), hovermode="closest",
                      clickmode="event+select", legend=dict(orientation="h", y=1.12, x=0))
    fig.update_yaxes(range=[-0.05, 1.05], tickformat=".0%")
    fig.update_xaxes(tickvals=x, ticktext=[f"{t:%b %d}" for t in x])
    return fig


def picked_row(event) -> int | None:
    """The customdata row of the first point a chart click reported."""
    points = list(getattr(getattr(event, "selection", None), "points", None) or [])
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        elif isinstance(cd, dict):
            cd = cd.get("0")
        if cd is not None:
            return int(cd)
    return None
