"""Exports of stored sessions, the same from the Reports page and `emoscope export`: a report
per audience (a team, an agent, a person, or any selection of sessions) as a PDF
(core.reporting.report_pdf), a per-session summary CSV, and the segments as CSV, Parquet, NPY
(embeddings with ids) and predict-format JSON — each segment with what was said in it (`text`)
where the session was transcribed — every file named after what it holds."""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from core.analysis import aggregates, scorecards
from core.base.labels import LABELS
from core.analysis.predict_answer import answer
from core.analysis.quality import has_flag
from core.insight import people, rollups
from core.storage.queries import Reader, SessionFilter
from core.reporting.report_pdf import ReportData, kpis, model_lines, to_pdf  # noqa: F401 (re-exported)

KINDS = ("team", "agent", "person", "sessions")


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """Scores as nine columns, lists as ';'-joined text, no embedding and no prosody curves
    (the Parquet export keeps those): one cell, one value."""
    out = df.drop(columns=[c for c in ("embedding", "scores", "pitch_curve", "loudness_curve")
                           if c in df]).copy()
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
    """Lossless: scores, embeddings and prosody curves stay list columns."""
    df = segments.copy()
    for col in ("scores", "embedding", "flags", "pitch_curve", "loudness_curve"):
        if col in df:
            df[col] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else None
                       for v in df[col]]
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
    """Each segment in the `emoscope predict` format (core/analysis/predict_answer, with the label it was
    stored with), plus where it is and what was said in it where the session was transcribed."""
    out = []
    for r in segments.itertuples(index=False):
        model = getattr(r, "model", None)
        trained = getattr(r, "trained", None)
        text = getattr(r, "text", None)
        head = getattr(r, "head", None)
        out.append({
            "segment_id": r.segment_id, "session_id": r.session_id, "speaker": r.speaker,
            "start_s": float(r.start_s), "end_s": float(r.end_s),
            **answer(r.label, r.confidence, r.scores,
                     r.fallback_action if isinstance(r.fallback_action, str) else None,
                     model if isinstance(model, str) else None,
                     bool(trained) if trained is not None and not pd.isna(trained) else None),
            # the head that gave `emotion` (core/storage/heads), where one did; else the model's own
            "head": head if isinstance(head, str) else None,
            "text": text if isinstance(text, str) else None})
    return out


def to_json(segments: pd.DataFrame) -> bytes:
    return json.dumps(predict_records(segments), ensure_ascii=False, indent=1).encode()


def sessions_csv(table: pd.DataFrame) -> bytes:
    """The per-session summary (core.analysis.scorecards.session_rows), one row per session; its
    categories ';'-joined in one cell."""
    if "categories" in table:
        table = table.assign(categories=[";".join(v) if isinstance(v, (list, tuple)) else ""
                                         for v in table.categories])
    return table.to_csv(index=False, float_format="%.4g").encode()


# -- what a report covers, and its name -------------------------------------------------------
@dataclass(frozen=True)
class ReportSpec:
    """Which sessions a report covers, for whom. `until` is exclusive (as in SessionFilter);
    `roles` restricts the segment figures and files to those speakers; `choices` says in words
    what else narrowed `session_ids` (the page's filters)."""
    kind: str = "sessions"
    key: str | None = None  # the team, agent or person
    since: str | None = None
    until: str | None = None
    session_ids: tuple[str, ...] | None = None
    roles: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # only sessions carrying any of them (core/analysis/categories)
    choices: str = ""
    period: str = ""  # the period word chosen (core.base.periods), when one was: names the files

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"a report is for one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind != "sessions" and not self.key:
            raise ValueError(f"a {self.kind} report needs the {self.kind} it is about")

    def filter(self) -> SessionFilter:
        who = {self.kind: self.key} if self.kind in ("team", "agent", "person") else {}
        return SessionFilter(session_ids=self.session_ids, since=self.since, until=self.until,
                             categories=self.categories or None, **who)

    @property
    def title(self) -> str:
        return {"team": f"Team {self.key}", "agent": f"Agent {self.key}",
                "person": f"Person {self.key}"}.get(self.kind, "Sessions")


def slug(text: str) -> str:
    """A name fit for a file: letters, digits, dot, dash and underscore only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-._")[:60] or "unnamed"


def _days(spec: ReportSpec, when: pd.Series) -> tuple[str, str]:
    """First and last day covered: the window asked for, else the sessions' own span."""
    when = pd.to_datetime(when).dropna()
    first = spec.since or (f"{when.min():%Y-%m-%d}" if len(when) else "start")
    last = (f"{pd.Timestamp(spec.until) - pd.Timedelta(days=1):%Y-%m-%d}" if spec.until
            else f"{when.max():%Y-%m-%d}" if len(when) else "end")
    return str(first)[:10], last


def file_stem(spec: ReportSpec, when: pd.Series) -> str:
    """`team-support_2026-11-01_2026-11-14` (plus `_customer` when only customers count);
    `team-support_latest-week_2026-11-08_2026-11-14` when a period was chosen: the days are the
    period's, not the span of the sessions found."""
    first, last = _days(spec, when)
    who = f"{spec.kind}-{slug(spec.key)}" if spec.kind != "sessions" else "sessions"
    return "_".join([who, *([slug(spec.period)] if spec.period else []), first, last,
                     *map(slug, spec.roles)])


def scope_line(spec: ReportSpec, n: int, when: pd.Series) -> str:
    first, last = _days(spec, when)
    parts = [spec.title, f"{first} to {last}"]
    if spec.roles:
        parts.append("speech of " + ", ".join(spec.roles))
    if spec.choices:
        parts.append(spec.choices)
    return " · ".join(parts) + f" · {n} session{'s' if n != 1 else ''}."


# -- the report formats: one registry, read by build, the API, `emoscope export` and the page --
@dataclass
class ReportInput:
    """What a format's writer may use: the sessions of the report, their segments (of the chosen
    roles' speech), alerts and per-session table, and what the PDF needs besides."""
    reader: Reader
    spec: ReportSpec
    scope: str
    sessions: pd.DataFrame
    segments: pd.DataFrame
    alerts: pd.DataFrame
    table: pd.DataFrame
    rules: object = None
    spool: object = None


@dataclass(frozen=True)
class ReportFormat:
    name: str     # `format=` of the API, `--format` of emoscope export
    suffix: str   # how its file name ends, after the report's stem
    mime: str
    label: str    # the Reports page's download button
    write: Callable[[ReportInput], bytes]
    about: str = ""  # one line for the API's and the CLI's help


FORMATS: dict[str, ReportFormat] = {}  # in the order the page offers them


def register_report_format(name: str, suffix: str, mime: str, label: str, about: str = ""):
    """Decorator: `write(ReportInput) -> bytes` becomes report format `name`, offered by
    `emoscope export`, GET /v1/reports and the Reports page with no other edit."""
    def add(write: Callable[[ReportInput], bytes]):
        FORMATS[name] = ReportFormat(name, suffix, mime, label, write, about)
        return write
    return add


def unregister_report_format(name: str) -> None:
    FORMATS.pop(name, None)


@register_report_format("pdf", ".pdf", "application/pdf", "PDF report",
                        "the report for its audience")
def _pdf(x: ReportInput) -> bytes:
    spec, segs, within = x.spec, x.segments, SessionFilter(session_ids=tuple(x.sessions.session_id))
    person = spec.kind == "person"
    models = segs.assign(head=segs.get("head")).groupby(
        ["model", "trained", "head"], dropna=False).session_id.nunique() \
        .reset_index(name="sessions") if len(segs) else pd.DataFrame()
    notes = (x.reader.notes_with_pending(x.spool, within) if x.spool is not None
             else x.reader.notes(within).assign(pending=False)) if person else pd.DataFrame()
    data = ReportData(
        title=f"Emoscope report: {spec.title}", scope=x.scope, sessions=x.sessions,
        segments=segs.drop(columns=["embedding"]), alerts=x.alerts,
        models=models, kind="person" if person else "calls", table=x.table,
        scorecards=pd.DataFrame() if person else _scorecards(x.reader, spec, x.table),
        journey=_journey(x.reader, spec, x.rules, set(within.session_ids)) if person
        else pd.DataFrame(),
        notes=notes, mix_limit=x.rules.baseline_mix_distance if x.rules else None,
        transcripts=x.reader.utterances(within) if "utterances" in x.reader.tables()
        else pd.DataFrame(),
        narrowband=int(segs[segs["flags"].map(lambda f: has_flag(f, "narrowband"))]
                       .session_id.nunique()) if len(segs) else 0)
    return to_pdf(data)


register_report_format("sessions", "_sessions.csv", "text/csv", "Sessions",
                       "one row per session, CSV")(lambda x: sessions_csv(x.table))
register_report_format("csv", "_segments.csv", "text/csv", "Segments (CSV)",
                       "the segments, CSV")(lambda x: to_csv(x.segments))
register_report_format("parquet", "_segments.parquet", "application/vnd.apache.parquet",
                       "Parquet", "the segments, lossless")(lambda x: to_parquet(x.segments))
register_report_format("npy", "_embeddings.npy", "application/octet-stream",
                       "NPY (embeddings + ids)", "embeddings with segment ids")(
    lambda x: to_npy(x.segments))
register_report_format("json", "_segments.json", "application/json", "JSON (predict format)",
                       "the segments in the predict format")(lambda x: to_json(x.segments))


# -- building ---------------------------------------------------------------------------------
@dataclass
class Report:
    stem: str
    scope: str
    session_ids: tuple[str, ...]
    n_segments: int
    n_alerts: int = 0  # alerts in the report (of the chosen roles' speech, when roles are set)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # format → (name, data)


def _journey(reader: Reader, spec: ReportSpec, rules, ids: set[str]) -> pd.DataFrame:
    """The person's entries in the window, each judged against all their earlier ones (also
    those before the window)."""
    if rules is None:
        return pd.DataFrame()
    j = people.journey(reader, spec.key, rules)
    if j.empty:
        return j
    roles = j[j.session_id.isin(ids)].role
    role = roles.mode().iloc[0] if len(roles) else None
    j = people.journey(reader, spec.key, rules, role=role)
    return j[j.session_id.isin(ids)].reset_index(drop=True)


def _scorecards(reader: Reader, spec: ReportSpec, table: pd.DataFrame) -> pd.DataFrame:
    if spec.kind != "agent":
        return scorecards.agent_scorecards(table)
    team = table.team.dropna().mode()
    if not len(team):
        return scorecards.agent_scorecards(table)
    # held against the whole team in the same window
    mates = rollups.session_table(reader, SessionFilter(team=team.iloc[0], since=spec.since,
                                                        until=spec.until))
    card = scorecards.agent_scorecards(mates)
    return card[card.agent_id == spec.key].reset_index(drop=True)


def build(reader: Reader, spec: ReportSpec, rules=None, spool=None,
          formats=None) -> Report | None:
    """The files of one report (only `formats`, else every registered one); None when no
    analysed session matches.

    `rules` (core.analysis.rules) gives a person's baseline; `spool` (core.storage.notes) adds notes not yet
    stored to a person's report."""
    f = spec.filter()
    sessions = reader.sessions(f)
    if spec.roles and len(sessions):  # the role filter's one meaning: sessions with the role
        speakers = reader.summary(f).set_index("session_id").speakers
        sessions = sessions[[bool(set(speakers.get(s, ())) & set(spec.roles))
                             for s in sessions.session_id]]
    if sessions.empty:
        return None
    ids = tuple(sessions.session_id)
    within = SessionFilter(session_ids=ids)
    stem = file_stem(spec, sessions["when"])
    scope = scope_line(spec, len(ids), sessions["when"])
    segs = reader.export_segments(within)
    if spec.roles:
        segs = segs[segs.speaker.isin(spec.roles)].reset_index(drop=True)
    alerts = aggregates.alerts_of_roles(reader.alerts(within), spec.roles)
    out = Report(stem, scope, ids, len(segs), n_alerts=len(alerts))
    table = rollups.session_table(reader, within)
    x = ReportInput(reader, spec, scope, sessions, segs, alerts, table, rules, spool)
    for fmt in FORMATS.values():  # the registry's order, whatever order was asked
        if formats is None or fmt.name in formats:
            out.files[fmt.name] = (stem + fmt.suffix, fmt.write(x))
    return out
