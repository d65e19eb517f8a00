"""The PDF reports' charts, drawn with matplotlib (Agg) into PNG bytes; every emotion keeps its
colour from core.base.labels.COLORS."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from core.base.labels import COLORS, LABELS

BAND = "#d9d9d9"
OUTSIDE = "#c0392b"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def png(fig) -> bytes:
    plt = _plt()
    for ax in fig.axes:
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def mix(seg: pd.DataFrame) -> bytes:
    """Minutes of speech per label."""
    plt = _plt()
    dur = (seg.end_s - seg.start_s).groupby(seg.label).sum()
    labs = [x for x in LABELS if x in dur.index]
    fig, ax = plt.subplots(figsize=(6.5, 2.2), dpi=150)
    ax.bar(labs, [dur[x] / 60 for x in labs], color=[COLORS[x] for x in labs])
    ax.set_ylabel("minutes of speech")
    ax.set_title("Emotion mix")
    return png(fig)


def mix_by_day(seg: pd.DataFrame) -> bytes | None:
    """Share of speech per label per day; None with fewer than two days."""
    plt = _plt()
    if "when" not in seg or seg["when"].isna().all():
        return None
    day = pd.to_datetime(seg["when"]).dt.normalize()
    tab = (seg.end_s - seg.start_s).groupby([day, seg.label]).sum().unstack(fill_value=0.0)
    if len(tab) < 2:
        return None
    share = tab.div(tab.sum(axis=1), axis=0)
    fig, ax = plt.subplots(figsize=(6.5, 2.4), dpi=150)
    bottom = np.zeros(len(share))
    x = [d.strftime("%m-%d") for d in share.index]
    for lab in LABELS:
        if lab in share:
            ax.bar(x, share[lab], bottom=bottom, color=COLORS[lab], label=lab)
            bottom += share[lab].to_numpy()
    ax.set_ylabel("share of speech")
    ax.set_title("Emotion mix by day")
    ax.legend(fontsize=6, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    ax.tick_params(axis="x", labelsize=7, rotation=45)
    return png(fig)


def agents(card: pd.DataFrame) -> bytes | None:
    """Per agent: the customer's negative share in the first and last quarter, side by side."""
    if card.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 2.2), dpi=150)
    x = np.arange(len(card))
    ax.bar(x - 0.2, card.cust_neg_first.fillna(0), 0.4, color="#9ecae1", label="first quarter")
    ax.bar(x + 0.2, card.cust_neg_last.fillna(0), 0.4, color=OUTSIDE, label="last quarter")
    ax.set_xticks(x, card.agent_id, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("customer negative share")
    ax.set_title("Customers' negative share per agent, first vs last quarter of the call")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, frameon=False)
    return png(fig)


def journey(j: pd.DataFrame, mix_limit: float | None = None) -> bytes | None:
    """A person's entries over time: negative share and volatility beside each entry's baseline
    (a grey bar: mean ± z·sd of the entries before it), and the mix distance from the usual mix
    against its limit; entries that depart from their baseline are ringed in red."""
    if j.empty:
        return None
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(6.5, 4.6), dpi=150, sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 2]})
    x = pd.to_datetime(j["when"])
    out = j.departs.astype(bool).to_numpy()
    for ax, col, title, floor, top in ((axes[0], "neg_share", "negative share", 0.0, 1.0),
                                       (axes[1], "volatility", "volatility", 0.0, None),
                                       (axes[2], "mix_distance", "mix distance", 0.0, 1.0)):
        y = pd.to_numeric(j[col], errors="coerce")
        if f"{col}_lo" in j:
            # each entry's own baseline (mean ± z·sd of the entries before it), at the entry
            lo = pd.to_numeric(j[f"{col}_lo"], errors="coerce").clip(lower=floor, upper=top)
            hi = pd.to_numeric(j[f"{col}_hi"], errors="coerce").clip(lower=floor, upper=top)
            ax.vlines(x, lo, hi, color=BAND, linewidth=7, label="baseline (mean ± z·sd)")
            ax.scatter(x, pd.to_numeric(j[f"baseline_{col}"], errors="coerce"), marker="_",
                       s=120, color="#7f8c8d", zorder=2)
        elif mix_limit is not None:
            ax.axhline(mix_limit, color="#7f8c8d", linestyle="--", linewidth=1, label="limit")
        ax.plot(x, y, "-o", color="#34495e", markersize=4, linewidth=1)
        ax.scatter(x[out], y[out], s=90, facecolors="none", edgecolors=OUTSIDE, linewidths=1.5,
                   label="departs from baseline", zorder=3)
        ax.set_ylabel(title, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylim(-0.02, 1.02)  # a share: the whole scale, not a zoom that exaggerates
    axes[2].set_ylim(bottom=0)
    axes[0].set_title("Entries over time", fontsize=9)
    axes[0].legend(fontsize=6, frameon=False, loc="upper left")
    axes[2].tick_params(axis="x", rotation=30)
    return png(fig)
