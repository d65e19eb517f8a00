"""Exports of stored sessions: CSV, Parquet, NPY (embeddings with ids), predict-format JSON and
a PDF report with KPIs, chart images and the top alerts."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from core.labels import COLORS, LABELS, NEGATIVE
from core.queries import Reader, SessionFilter

SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1}


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """Scores as nine columns, lists as ';'-joined text, no embedding: one cell, one value."""
    out = df.drop(columns=[c for c in ("embedding", "scores") if c in df]).copy()
    if "scores" in df and len(df):
        scores = np.stack([np.asarray(s, float) for s in df.scores])
        for i, lab in enumerate(LABELS):
            out[f"score_{lab}"] = scores[:, i]
    if "flags" in out:
        out["flags"] = [";".join(v) if v is not None and len(v) else "" for v in out["flags"]]
    return out


def to_csv(segments: pd.DataFrame) -> bytes:
    return _flat(segments).to_csv(index=False).encode()


def to_parquet(segments: pd.DataFrame) -> bytes:
    """Lossless: scores and embeddings stay list columns."""
    df = segments.copy()
    for col in ("scores", "embedding", "flags"):
        if col in df:
            df[col] = [None if v is None else list(v) for v in df[col]]
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def to_npy(segments: pd.DataFrame) -> bytes:
    """One .npy holding a structured array: segment_id and its embedding (loads without pickle)."""
    rows = segments[segments.embedding.notna()] if len(segments) else segments
    if len(rows) == 0:
        arr = np.zeros(0, dtype=[("segment_id", "U64"), ("embedding", "f4", (0,))])
    else:
        emb = np.stack([np.asarray(e, np.float32) for e in rows.embedding])
        width = max(8, int(rows.segment_id.str.len().max()))
        arr = np.zeros(len(rows), dtype=[("segment_id", f"U{width}"),
                                         ("embedding", "f4", (emb.shape[1],))])
        arr["segment_id"] = rows.segment_id.to_numpy()
        arr["embedding"] = emb
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def predict_records(segments: pd.DataFrame) -> list[dict]:
    """Each segment in the `emoscope predict` format, plus where it is."""
    out = []
    for r in segments.itertuples(index=False):
        scores = [float(x) for x in r.scores]
        out.append({
            "segment_id": r.segment_id, "session_id": r.session_id, "speaker": r.speaker,
            "start_s": float(r.start_s), "end_s": float(r.end_s),
            "emotion": r.label, "confidence": round(float(r.confidence), 4),
            "scores": {lab: round(s, 4) for lab, s in zip(LABELS, scores)},
            "fallback_action": r.fallback_action if isinstance(r.fallback_action, str) else None,
            "model": getattr(r, "model", None) if isinstance(getattr(r, "model", None), str)
            else None,
            "trained": bool(r.trained) if getattr(r, "trained", None) is not None
            and not pd.isna(r.trained) else None})
    return out


def to_json(segments: pd.DataFrame) -> bytes:
    return json.dumps(predict_records(segments), ensure_ascii=False, indent=1).encode()


FORMATS = ("csv", "parquet", "npy", "json", "pdf")


def build_all(reader: Reader, sessions: pd.DataFrame, scope: str,
              alerts: pd.DataFrame | None = None, title: str = "Emoscope report",
              formats=FORMATS) -> dict:
    """Exports of these sessions: {"csv", "parquet", "npy", "json", "pdf": bytes} (those in
    `formats`), plus "_n" (segments) and "_ids" (sessions).

    `sessions` has session_id, file_name, when, duration_s, agent_id, customer_id
    (Reader.sessions gives them); `alerts` may be passed in when the caller has them cached.
    """
    # Only sessions the reader's viewer may see, whatever the caller passed in.
    visible = set(reader.sessions(SessionFilter(session_ids=tuple(sessions.session_id)))
                  .session_id)
    sessions = sessions[sessions.session_id.isin(visible)]
    ids = sessions.session_id.tolist()
    segs = reader.export_segments(SessionFilter(session_ids=tuple(ids)))
    al = reader.alerts() if alerts is None else alerts
    al = al[al.session_id.isin(ids)] if len(al) else pd.DataFrame(
        columns=["session_id", "speaker", "rule", "t_s", "severity", "detail"])
    models = segs.groupby(["model", "trained"], dropna=False).session_id.nunique() \
        .reset_index(name="sessions") if len(segs) else pd.DataFrame()
    out = {"_n": len(segs), "_ids": tuple(ids)}
    for fmt in formats:
        if fmt == "pdf":
            out["pdf"] = to_pdf(ReportData(
                title=title, scope=scope,
                sessions=sessions[["session_id", "file_name", "when", "duration_s", "agent_id",
                                   "customer_id"]],
                segments=segs.drop(columns=["embedding"]), alerts=al, models=models))
        else:
            out[fmt] = {"csv": to_csv, "parquet": to_parquet, "npy": to_npy,
                        "json": to_json}[fmt](segs)
    return out


# -- PDF ------------------------------------------------------------------------------------
@dataclass
class ReportData:
    """What the PDF says; the caller picks the sessions and computes nothing twice."""
    title: str
    scope: str  # one line: which sessions (filters) the report covers
    sessions: pd.DataFrame  # session_id, file_name, when, duration_s, agent_id, customer_id
    segments: pd.DataFrame  # Reader.export_segments rows (embedding not needed)
    alerts: pd.DataFrame = field(default_factory=pd.DataFrame)
    models: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, trained, sessions


def kpis(d: ReportData) -> dict[str, str]:
    seg = d.segments
    talk = float((seg.end_s - seg.start_s).sum()) if len(seg) else 0.0
    neg = float((seg.end_s - seg.start_s)[seg.label.isin(NEGATIVE)].sum()) if len(seg) else 0.0
    flagged = d.alerts.session_id.nunique() if len(d.alerts) else 0
    return {"Sessions": f"{len(d.sessions)}",
            "Audio hours": f"{d.sessions.duration_s.fillna(0).sum() / 3600:.2f}",
            "Speech analysed": f"{talk / 60:.1f} min in {len(seg)} segments",
            "Negative-emotion share": f"{neg / talk:.0%}" if talk > 0 else "-",
            "Flagged sessions": f"{flagged}",
            "Alerts": f"{len(d.alerts)}"}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    fig.axes[0].spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _chart_mix(seg: pd.DataFrame) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dur = (seg.end_s - seg.start_s).groupby(seg.label).sum()
    labs = [x for x in LABELS if x in dur.index]
    fig, ax = plt.subplots(figsize=(6.5, 2.4), dpi=150)
    ax.bar(labs, [dur[x] / 60 for x in labs], color=[COLORS[x] for x in labs])
    ax.set_ylabel("minutes of speech")
    ax.set_title("Emotion mix")
    return _png(fig)


def _chart_over_time(seg: pd.DataFrame) -> bytes | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    return _png(fig)


def _font_path() -> Path | None:
    """A Unicode TrueType font: matplotlib ships DejaVu Sans, so every install has one."""
    import matplotlib
    p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return p if p.exists() else None


def model_lines(models: pd.DataFrame) -> tuple[str, str | None]:
    """The report's model line, and a warning when any of the data is from an untrained one."""
    if models is None or len(models) == 0:
        return "Model: unknown", None
    names = ", ".join(f"{m} ({'trained' if bool(t) else 'UNTRAINED'})"
                      for m, t in zip(models.model, models.trained))
    if models.trained.astype(bool).all():
        return f"Model: {names}", None
    return (f"Model: {names}", "Warning: some of this data comes from an untrained test model "
            "with random weights. Its emotion labels mean nothing.")


def to_pdf(d: ReportData) -> bytes:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    font = _font_path()
    if font:
        pdf.add_font("dejavu", "", str(font))
        pdf.add_font("dejavu", "B", str(font.with_name("DejaVuSans-Bold.ttf")))
        family = "dejavu"
    else:
        family = "helvetica"
    pdf.add_page()
    pdf.set_font(family, "B", 16)
    pdf.cell(0, 10, d.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 9)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pdf.multi_cell(0, 5, f"{d.scope}\nGenerated {stamp} by Emoscope.", new_x="LMARGIN",
                   new_y="NEXT")
    pdf.ln(2)
    # The model, and a warning that cannot be missed when it was not trained.
    line, warning = model_lines(d.models)
    pdf.set_font(family, "B", 10)
    pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    if warning:
        pdf.set_text_color(180, 0, 0)
        pdf.multi_cell(0, 5, warning, new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
    pdf.ln(2)
    pdf.set_font(family, "", 10)
    with pdf.table(col_widths=(60, 120), first_row_as_headings=False) as t:
        for k, v in kpis(d).items():
            r = t.row()
            r.cell(k)
            r.cell(v)
    pdf.ln(3)
    if len(d.segments):
        pdf.image(io.BytesIO(_chart_mix(d.segments)), w=180)
        over = _chart_over_time(d.segments)
        if over:
            pdf.image(io.BytesIO(over), w=180)
    pdf.set_font(family, "B", 12)
    pdf.cell(0, 8, "Top alerts", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 8)
    if len(d.alerts):
        top = d.alerts.assign(_r=d.alerts.severity.map(SEVERITY_RANK).fillna(0)) \
            .sort_values(["_r", "session_id", "t_s"], ascending=[False, True, True]).head(15)
        names = d.sessions.set_index("session_id").file_name.to_dict() \
            if len(d.sessions) else {}
        with pdf.table(col_widths=(50, 16, 18, 14, 82),
                       headings_style=FontFace(emphasis="BOLD")) as t:
            h = t.row()
            for x in ("Session", "Severity", "Speaker", "At", "What"):
                h.cell(x)
            for a in top.itertuples(index=False):
                r = t.row()
                r.cell(str(names.get(a.session_id, a.session_id)))
                r.cell(str(a.severity))
                r.cell(str(a.speaker))
                r.cell(f"{float(a.t_s):.1f} s" if pd.notna(a.t_s) else "-")
                r.cell(f"{a.rule}: {a.detail}")
    else:
        pdf.cell(0, 6, "No alerts for these sessions.", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
