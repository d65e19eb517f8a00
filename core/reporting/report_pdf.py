"""The PDF reports: one layout for calls (a team, an agent, any selection of sessions) and one
for a person's diary. The caller (core.reporting.reports.build) reads the rows; this module only lays
them out, with charts from core.reporting.report_charts."""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from core.reporting import report_charts as charts
from core.base.labels import NEGATIVE
from core.analysis.quality import NARROWBAND_CAVEAT
from core.analysis.rules import SEVERITY_RANK

TOP_ALERTS = 15
MAX_LISTED = 200  # sessions listed in full; the CSV beside the PDF holds every one
SAID_SESSIONS, SAID_LINES = 3, 40  # transcripts printed: the worst sessions, their first lines


@dataclass
class ReportData:
    """What the PDF says; the caller picks the sessions and computes nothing twice."""
    title: str
    scope: str  # one line: which sessions (filters) the report covers
    sessions: pd.DataFrame  # session_id, file_name, when, duration_s, agent_id, customer_id
    segments: pd.DataFrame  # Reader.export_segments rows (embedding not needed)
    alerts: pd.DataFrame = field(default_factory=pd.DataFrame)
    models: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, trained, sessions
    kind: str = "calls"  # "calls" or "person"
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # scorecards.session_rows
    scorecards: pd.DataFrame = field(default_factory=pd.DataFrame)  # per agent
    journey: pd.DataFrame = field(default_factory=pd.DataFrame)  # aggregates.journey rows
    notes: pd.DataFrame = field(default_factory=pd.DataFrame)  # core.storage.notes.COLUMNS
    mix_limit: float | None = None  # [baseline] mix_distance: where an entry's mix departs
    transcripts: pd.DataFrame = field(default_factory=pd.DataFrame)  # Reader.utterances rows
    narrowband: int = 0  # sessions of telephone-band audio (core/analysis/quality)


def kpis(d: ReportData) -> dict[str, str]:
    seg = d.segments
    talk = float((seg.end_s - seg.start_s).sum()) if len(seg) else 0.0
    neg = float((seg.end_s - seg.start_s)[seg.label.isin(NEGATIVE)].sum()) if len(seg) else 0.0
    flagged = d.alerts.session_id.nunique() if len(d.alerts) else 0
    by_sev = d.alerts.severity.value_counts() if len(d.alerts) else pd.Series(dtype=int)
    return {"Sessions": f"{len(d.sessions)}",
            "Audio hours": f"{d.sessions.duration_s.fillna(0).sum() / 3600:.2f}",
            "Speech analysed": f"{talk / 60:.1f} min in {len(seg)} segments",
            "Negative-emotion share": f"{neg / talk:.0%}" if talk > 0 else "-",
            "Flagged sessions": f"{flagged}",
            "Alerts": f"{len(d.alerts)}" + (" (" + ", ".join(
                f"{int(by_sev.get(s, 0))} {s}" for s in ("high", "medium", "low")) + ")"
                if len(d.alerts) else "")}


def model_lines(models: pd.DataFrame) -> tuple[str, str | None]:
    """The report's model line, and a warning when any of the data is from an untrained one."""
    if models is not None and len(models):
        models = models[models.model.notna() & models.trained.notna()]
    if models is None or len(models) == 0:
        return "Model: unknown", None
    heads = models["head"] if "head" in models else [None] * len(models)
    names = ", ".join(f"{m} ({'trained' if bool(t) else 'UNTRAINED'})"
                      + (f", labels by head {h}" if isinstance(h, str) else "")
                      for m, t, h in zip(models.model, models.trained, heads))
    if models.trained.astype(bool).all():
        return f"Model: {names}", None
    return (f"Model: {names}", "Warning: some of this data comes from an untrained test model "
            "with random weights. Its emotion labels mean nothing.")


def _font_path() -> Path | None:
    """A Unicode TrueType font: matplotlib ships DejaVu Sans, so every install has one."""
    import matplotlib
    p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return p if p.exists() else None


def _pct(v) -> str:
    return "-" if v is None or pd.isna(v) else f"{float(v):.0%}"


def _num(v, fmt: str = ".2f") -> str:
    return "-" if v is None or pd.isna(v) else format(float(v), fmt)


def _text(v) -> str:
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def wrapped_name(name: str, width: int = 20) -> str:
    """A file name broken into lines of at most `width` characters after its separators
    (`_`, `-`, `.`, space), so a narrow table column wraps it between words, not inside
    one; a piece longer than a line is cut at the width."""
    parts = re.findall(r"[^_\-. ]*[_\-. ]?", name)
    lines, line = [], ""
    for part in filter(None, parts):
        while len(part) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(part[:width])
            part = part[width:]
        if len(line) + len(part) > width and line:
            lines.append(line)
            line = ""
        line += part
    if line:
        lines.append(line)
    return "\n".join(lines)


def _day(v) -> str:
    return "" if v is None or pd.isna(v) else f"{pd.Timestamp(v):%Y-%m-%d %H:%M}"


def _clock(t) -> str:
    return "-" if t is None or pd.isna(t) else f"{int(float(t) // 60)}:{float(t) % 60:04.1f}"


class Doc:
    """fpdf2 with the few moves the reports make: headings, lines, tables, images."""

    def __init__(self):
        from fpdf import FPDF
        self.pdf = FPDF(format="A4")
        self.pdf.set_margins(12, 12, 12)
        self.pdf.set_auto_page_break(True, margin=14)
        font = _font_path()
        self.family = "helvetica"
        if font:
            self.pdf.add_font("dejavu", "", str(font))
            self.pdf.add_font("dejavu", "B", str(font.with_name("DejaVuSans-Bold.ttf")))
            self.family = "dejavu"
        self.pdf.add_page()

    def h1(self, text: str) -> None:
        self.pdf.set_font(self.family, "B", 16)
        self.pdf.multi_cell(0, 9, text, new_x="LMARGIN", new_y="NEXT")

    def h2(self, text: str, keep_mm: float = 40) -> None:
        """A heading, on a new page when less than `keep_mm` would follow it on this one."""
        if self.pdf.get_y() + 10 + keep_mm > self.pdf.h - self.pdf.b_margin:
            self.pdf.add_page()
        self.pdf.ln(2)
        self.pdf.set_font(self.family, "B", 12)
        self.pdf.cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")

    def line(self, text: str, size: int = 9, bold: bool = False, red: bool = False) -> None:
        self.pdf.set_font(self.family, "B" if bold else "", size)
        if red:
            self.pdf.set_text_color(180, 0, 0)
        self.pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_text_color(0, 0, 0)

    def pairs(self, items: dict[str, str]) -> None:
        self.pdf.set_font(self.family, "", 9)
        with self.pdf.table(col_widths=(60, 126), first_row_as_headings=False,
                            text_align="LEFT") as t:
            for k, v in items.items():
                r = t.row()
                r.cell(k)
                r.cell(v)

    def table(self, head: list[str], rows: list[list[str]], widths: tuple, size: int = 7
              ) -> None:
        from fpdf.fonts import FontFace
        self.pdf.set_font(self.family, "", size)
        with self.pdf.table(col_widths=widths, headings_style=FontFace(emphasis="BOLD"),
                            line_height=size * 0.55, text_align="LEFT") as t:
            h = t.row()
            for x in head:
                h.cell(x)
            for values in rows:
                r = t.row()
                for x in values:
                    r.cell(x)

    def image(self, data: bytes | None) -> None:
        if data:
            self.pdf.image(io.BytesIO(data), w=186)

    def bytes(self) -> bytes:
        return bytes(self.pdf.output())


def _header(doc: Doc, d: ReportData) -> None:
    doc.h1(d.title)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.line(f"{d.scope}\nGenerated {stamp} by Emoscope.")
    line, warning = model_lines(d.models)
    doc.line(line, 10, bold=True)
    if warning:
        doc.line(warning, 9, red=True)
    if d.narrowband:
        doc.line(f"{d.narrowband} of {len(d.sessions)} sessions are narrowband. "
                 + NARROWBAND_CAVEAT, 9, red=True)


def _alerts(doc: Doc, d: ReportData) -> None:
    doc.h2("Top alerts")
    if not len(d.alerts):
        doc.line("No alerts for these sessions.")
        return
    top = d.alerts.assign(_r=d.alerts.severity.map(SEVERITY_RANK).fillna(0)) \
        .sort_values(["_r", "session_id", "t_s"], ascending=[False, True, True]) \
        .head(TOP_ALERTS)
    names = d.sessions.set_index("session_id").file_name.to_dict() if len(d.sessions) else {}
    resp = top.suggested_response if "suggested_response" in top else [None] * len(top)
    doc.table(["Session", "At", "Speaker", "Severity", "What", "Suggested response"],
              [[wrapped_name(_text(names.get(a.session_id, a.session_id))), _clock(a.t_s),
                a.speaker,
                a.severity, f"{a.rule}: {a.detail}", _text(r)]
               for a, r in zip(top.itertuples(index=False), resp)],
              (32, 11, 15, 15, 66, 47))
    if len(d.alerts) > TOP_ALERTS:
        doc.line(f"{len(d.alerts) - TOP_ALERTS} more in the sessions CSV.", 8)


def _roles(doc: Doc, t: pd.DataFrame) -> None:
    """Agent against customer: how much each talks, how negative, how volatile."""
    rows = []
    for role in ("agent", "customer", "speaker"):
        talk = t.get(f"{role}_talk_s")
        if talk is None or talk.notna().sum() == 0:
            continue
        w = talk.fillna(0)
        neg = (t[f"{role}_neg_share"].fillna(0) * w).sum() / w.sum() if w.sum() > 0 else None
        first = t[f"{role}_neg_first"].mean() if f"{role}_neg_first" in t else None
        last = t[f"{role}_neg_last"].mean() if f"{role}_neg_last" in t else None
        rows.append([role, f"{w.sum() / 60:.1f}", _pct(w.sum() / t.talk_s.fillna(0).sum()
                                                       if t.talk_s.fillna(0).sum() > 0 else None),
                     _pct(neg), _pct(first), _pct(last), _num(t[f"{role}_volatility"].mean(),
                                                             ".3f"),
                     _num(t[f"{role}_interruptions"].mean(), ".1f")
                     if f"{role}_interruptions" in t else "-"])
    if rows:
        doc.h2("Agent and customer")
        doc.table(["Role", "Talk (min)", "Share of talk", "Negative", "Negative, first ¼",
                   "Negative, last ¼", "Volatility", "Interruptions / call"], rows,
                  (22, 20, 22, 20, 26, 26, 22, 28))


def _conversation(doc: Doc, t: pd.DataFrame) -> None:
    doc.h2("Conversation, per session")
    cols = [("turns", "Turns", ".1f"), ("interruptions", "Interruptions", ".1f"),
            ("overlap_s", "Overlap (s)", ".1f"), ("silence_s", "Silence (s)", ".1f"),
            ("longest_silence_s", "Longest gap (s)", ".1f")]
    doc.table(["", *[c[1] for c in cols]],
              [["mean", *[_num(t[c].mean(), f) for c, _, f in cols]],
               ["median", *[_num(t[c].median(), f) for c, _, f in cols]],
               ["max", *[_num(t[c].max(), f) for c, _, f in cols]]],
              (26, 32, 32, 32, 32, 32))


def _agents(doc: Doc, card: pd.DataFrame) -> None:
    if card.empty:
        return
    doc.h2("Per agent (against the team's median)")
    doc.table(["Agent", "Team", "Calls", "Talk share", "Cust. negative first → last ¼",
               "Alerts high/med/low", "Interr. / call", "Overlap / call (s)", "Volatility"],
              [[a.agent_id, _text(a.team), str(a.calls),
                f"{_pct(a.talk_share)} ({_num(a.talk_share_vs_team * 100, '+.0f')} pt)",
                f"{_pct(a.cust_neg_first)} → {_pct(a.cust_neg_last)}",
                f"{a.high}/{a.medium}/{a.low}",
                f"{_num(a.interruptions_per_call, '.1f')} "
                f"({_num(a.interruptions_per_call_vs_team, '+.1f')})",
                f"{_num(a.overlap_per_call, '.1f')}", _num(a.mean_volatility, ".3f")]
               for a in card.itertuples(index=False)],
              (20, 18, 11, 24, 30, 22, 20, 20, 17))
    doc.image(charts.agents(card))


def _session_list(doc: Doc, t: pd.DataFrame) -> None:
    doc.h2(f"Sessions ({len(t)})")
    shown = t.sort_values("when", kind="stable").head(MAX_LISTED)
    doc.table(["When", "File", "Agent", "Customer / person", "Min", "Negative", "Alerts",
               "Worst"],
              [[_day(r.when), _text(r.file_name), _text(r.agent_id), _text(r.customer_id),
                _num((r.duration_s or 0) / 60, ".1f"), _pct(r.neg_share), str(r.alerts),
                _text(r.severity)] for r in shown.itertuples(index=False)],
              (28, 50, 18, 26, 12, 18, 14, 20))
    if len(t) > MAX_LISTED:
        doc.line(f"{len(t) - MAX_LISTED} more in the sessions CSV.", 8)


def _said(doc: Doc, d: ReportData, order: list[str], why: str) -> None:
    """What was said in a few sessions (`order`, first first): time, speaker, how it sounded
    and the words, so a reader of the report sees the call, not only its labels."""
    t = d.transcripts
    if t.empty:
        return
    chosen = [s for s in order if s in set(t.session_id)][:SAID_SESSIONS]
    if not chosen:
        return
    doc.h2("What was said", keep_mm=50)
    doc.line(why, size=8)
    names = dict(zip(d.sessions.session_id, d.sessions.file_name)) if len(d.sessions) else {}
    for sid in chosen:
        lines = t[t.session_id == sid]
        doc.line(f"{names.get(sid, sid)} ({sid})", bold=True)
        rows = [[_clock(u.start_s), _text(u.speaker), _text(u.label), _text(u.text)]
                for u in lines.head(SAID_LINES).itertuples()]
        doc.table(["At", "Speaker", "Sounded", "Said"], rows, (14, 20, 20, 132))
        if len(lines) > SAID_LINES:
            doc.line(f"... {len(lines) - SAID_LINES} more lines in the JSON and CSV exports.",
                     size=7)


def calls_pdf(d: ReportData) -> bytes:
    doc = Doc()
    _header(doc, d)
    doc.pairs(kpis(d))
    if len(d.table):
        _roles(doc, d.table)
        _conversation(doc, d.table)
    _agents(doc, d.scorecards)
    if len(d.segments):
        doc.h2("Emotions", keep_mm=60)
        doc.image(charts.mix(d.segments))
        doc.image(charts.mix_by_day(d.segments))
    _alerts(doc, d)
    if len(d.table):
        worst = d.table.sort_values("alerts", ascending=False, kind="stable") \
            if "alerts" in d.table else d.table
        _said(doc, d, list(worst.session_id), "The sessions with the most alerts; each line "
              "with the emotion of the speech it was said in.")
        _session_list(doc, d.table)
    return doc.bytes()


def person_pdf(d: ReportData) -> bytes:
    doc = Doc()
    _header(doc, d)
    j = d.journey
    items = kpis(d)
    if len(j):
        last = j.iloc[-1]
        items["Entries outside their baseline"] = f"{int(j.departs.sum())} of {len(j)}"
        items["Latest entry"] = f"{_day(last.when)}: {last.status}"
        if pd.notna(last.get("baseline_neg_share")):
            items["Baseline before it (negative share)"] = (
                f"{_pct(last.baseline_neg_share)} ± {_pct(last.baseline_neg_share_sd)} over "
                f"{int(last.baseline_sessions)} earlier entries")
        if pd.notna(last.get("baseline_volatility")):
            items["Baseline before it (volatility)"] = (
                f"{_num(last.baseline_volatility, '.3f')} ± "
                f"{_num(last.baseline_volatility_sd, '.3f')}")
    doc.pairs(items)
    if len(j):
        doc.h2("Journey", keep_mm=110)
        doc.line("Each point is one entry. The grey bar beside it is the person's baseline "
                 "before it (mean ± z·sd of the earlier entries); the bottom panel is how far "
                 "the entry's emotion mix lies from their usual mix, against its limit (dashed). "
                 "Ringed entries depart from the baseline on at least one of the three.", 8)
        doc.image(charts.journey(j, d.mix_limit))
        counts = d.notes.session_id.value_counts() if len(d.notes) else pd.Series(dtype=int)
        doc.h2("Entries")
        doc.table(["When", "File", "Negative", "Volatility", "Mix distance", "Status",
                   "Notes"],
                  [[_day(r.when), _text(r.get("file_name")), _pct(r.neg_share),
                    _num(r.volatility, ".3f"), _num(r.mix_distance), r.status,
                    str(int(counts.get(r.session_id, 0)))] for _, r in j.iterrows()],
                  (28, 52, 18, 20, 20, 34, 14))
    latest = d.sessions.sort_values("when", ascending=False).session_id.tolist() \
        if len(d.sessions) else []
    _said(doc, d, latest, "The latest entries, in the person's words; each line with the "
          "emotion of the speech it was said in.")
    doc.h2("Notes")
    if len(d.notes):
        names = j.set_index("session_id").file_name.to_dict() if "file_name" in j else {}
        doc.table(["Written", "By", "Entry", "Note"],
                  [[_day(n.created_at) + (" (pending)" if n.pending else ""), n.author,
                    _text(names.get(n.session_id, n.session_id)), n.body]
                   for n in d.notes.itertuples(index=False)], (30, 24, 40, 92))
    else:
        doc.line("No notes on these entries.")
    if len(d.segments):
        doc.h2("Emotions")
        doc.image(charts.mix(d.segments))
    _alerts(doc, d)
    return doc.bytes()


def to_pdf(d: ReportData) -> bytes:
    return person_pdf(d) if d.kind == "person" else calls_pdf(d)
