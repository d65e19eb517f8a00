"""Cached reads of the store for the pages.

Every cached function takes the DB's version (mtime and size of the file and its WAL) as an
argument, so a new ingest changes the cache key and the next rerun shows the new data without a
restart. Connections are opened per read by `Store` (read-only, retried while a writer holds
the lock) and never kept.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.labels import LABELS, NEGATIVE
from core.store import DEFAULT_DB, Store

SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1}


def db_path() -> Path:
    return Path(os.environ.get("EMOSCOPE_DB", str(DEFAULT_DB)))


def db_version(path: Path | None = None) -> tuple:
    """Changes whenever a writer commits: the file or its write-ahead log moves."""
    path = path or db_path()
    out = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            s = p.stat()
            out += [s.st_mtime_ns, s.st_size]
        except FileNotFoundError:
            out += [0, 0]
    return tuple(out)


def store() -> Store:
    return Store(db_path(), retry_s=10.0)


def _has_tables(version: tuple, path: str) -> set[str]:
    df = Store(path).query("SELECT table_name FROM information_schema.tables")
    return set(df.table_name)


@st.cache_data(show_spinner=False, max_entries=4)
def tables(version: tuple, path: str) -> set[str]:
    return _has_tables(version, path)


def state() -> tuple[tuple, str]:
    """(version, path) — the cache key every read below takes."""
    p = db_path()
    return db_version(p), str(p)


def ready() -> bool:
    """The DB exists and holds at least one session."""
    p = db_path()
    if not p.exists():
        return False
    v, path = state()
    return "sessions" in tables(v, path) and n_sessions(v, path) > 0


@st.cache_data(show_spinner=False, max_entries=4)
def n_sessions(version: tuple, path: str) -> int:
    return int(Store(path).query("SELECT count(*) AS n FROM sessions").n.iloc[0])


@st.cache_data(show_spinner=False, max_entries=4)
def models(version: tuple, path: str) -> pd.DataFrame:
    """The models behind the stored ok sessions and whether each was trained."""
    return Store(path).query(
        "SELECT r.model, r.trained, count(*) AS sessions FROM sessions s "
        "JOIN runs r USING (run_id) WHERE s.status = 'ok' GROUP BY ALL ORDER BY sessions DESC")


# The summary, the mix and the index are shared resources, not copies: at 10,000 sessions
# unpickling a fresh copy on every rerun costs more than the page itself. Callers never
# modify them in place (they filter, assign or copy).
@st.cache_resource(show_spinner=False, max_entries=2)
def session_summary(version: tuple, path: str) -> pd.DataFrame:
    """One row per session with what the overview filters and sorts on."""
    have = tables(version, path)
    # Lists are built in SQL (never NULL), so no Python loop runs over the sessions.
    alerts_sql = ("SELECT session_id, count(*) AS n_alerts, max(CASE severity WHEN 'high' "
                  "THEN 3 WHEN 'medium' THEN 2 ELSE 1 END) AS severity_rank, "
                  "list_sort(list_distinct(list(rule))) AS alert_rules FROM alerts GROUP BY 1"
                  if "alerts" in have else
                  "SELECT NULL::VARCHAR AS session_id, 0 AS n_alerts, 0 AS severity_rank, "
                  "[]::VARCHAR[] AS alert_rules WHERE false")
    vol_sql = ("SELECT session_id, volatility FROM session_metrics WHERE speaker = 'all'"
               if "session_metrics" in have else
               "SELECT NULL::VARCHAR AS session_id, NULL::DOUBLE AS volatility WHERE false")
    base = Store(path).query(
        "WITH ch AS (SELECT session_id, list_sort(list_distinct(list(speaker))) AS speakers, "
        "  list_sort(list_distinct(flatten(list(coalesce(flags, []))))) AS qflags "
        "  FROM channels GROUP BY 1), "
        f"al AS ({alerts_sql}), vol AS ({vol_sql}) "
        "SELECT s.session_id, s.file_name, s.source_path, s.status, s.error, s.duration_s, "
        "s.n_channels, s.agent_id, s.customer_id, s.team, coalesce(s.tags, []) AS tags, "
        "coalesce(s.recorded_at, s.ingested_at) AS \"when\", s.run_id, "
        "coalesce(ch.speakers, []) AS speakers, "
        "list_sort(list_distinct(list_concat(coalesce(ch.qflags, []), "
        "  coalesce(al.alert_rules, [])))) AS flags, "
        "coalesce(al.n_alerts, 0)::INTEGER AS alerts, "
        "coalesce(al.severity_rank, 0)::INTEGER AS severity_rank, vol.volatility "
        "FROM sessions s LEFT JOIN ch USING (session_id) LEFT JOIN al USING (session_id) "
        "LEFT JOIN vol USING (session_id)")
    mix = label_seconds(version, path)
    talk = mix.groupby("session_id").seconds.sum()
    neg = mix[mix.label.isin(NEGATIVE)].groupby("session_id").seconds.sum()
    dom = (mix.sort_values(["session_id", "seconds"], ascending=[True, False])
           .drop_duplicates("session_id").set_index("session_id").label)
    base["talk_s"] = base.session_id.map(talk).fillna(0.0)
    base["negative_share"] = (base.session_id.map(neg).fillna(0.0)
                              / base.talk_s.where(base.talk_s > 0)).astype(float)
    base["dominant"] = base.session_id.map(dom)
    inv = {v: k for k, v in SEVERITY_RANK.items()}
    base["severity"] = base.severity_rank.map(inv).fillna("")
    base["when"] = pd.to_datetime(base["when"])
    base["session_id"] = base.session_id.astype(object)  # fast isin/map on plain strings
    return base.sort_values(["severity_rank", "alerts", "negative_share", "when"],
                            ascending=[False, False, False, False],
                            na_position="last").reset_index(drop=True)


@st.cache_resource(show_spinner=False, max_entries=2)
def summary_options(version: tuple, path: str) -> dict:
    """The choices each overview filter offers, computed once per DB version."""
    s = session_summary(version, path)
    when = s["when"].dropna()
    flat = lambda col: sorted({x for v in s[col] for x in v})  # noqa: E731
    vals = lambda col: sorted({str(x) for x in s[col].dropna()})  # noqa: E731
    return {"dates": (when.min().date(), when.max().date()) if len(when) else None,
            "agents": vals("agent_id"), "teams": vals("team"),
            "people": sorted(set(vals("customer_id")) | set(vals("agent_id"))),
            "roles": flat("speakers"), "flags": flat("flags"),
            "dominant": sorted(set(s.dominant.dropna()), key=LABELS.index)}


@st.cache_resource(show_spinner=False, max_entries=2)
def session_choices(version: tuple, path: str) -> tuple[list[str], dict[str, str]]:
    """Session ids, newest first, and the text the session picker shows for each."""
    s = session_summary(version, path).sort_values("when", ascending=False,
                                                   na_position="last")
    text = {sid: f"{name} · {w:%Y-%m-%d %H:%M} · {sid}" if pd.notna(w) else f"{name} · {sid}"
            for sid, name, w in zip(s.session_id, s.file_name, s["when"])}
    return s.session_id.tolist(), text


@st.cache_resource(show_spinner=False, max_entries=2)
def mix_table(version: tuple, path: str) -> pd.DataFrame:
    """label_seconds with each session's summary row number and day/week, for mix_over_time."""
    mix = label_seconds(version, path).copy()
    s = session_summary(version, path)
    row = pd.Series(np.arange(len(s)), index=s.session_id)
    mix["row"] = mix.session_id.astype(object).map(row).to_numpy()
    day = pd.to_datetime(mix.session_id.astype(object).map(s.set_index("session_id")["when"])
                         ).dt.normalize()
    mix["day"] = day
    mix["week"] = day - pd.to_timedelta(day.dt.weekday, unit="D")
    return mix


@st.cache_resource(show_spinner=False, max_entries=2)
def label_seconds(version: tuple, path: str) -> pd.DataFrame:
    """Seconds of speech per (session, label): the emotion mix at any grouping."""
    return Store(path).query(
        "SELECT session_id, label, sum(end_s - start_s) AS seconds FROM segments GROUP BY ALL")


@st.cache_data(show_spinner=False, max_entries=32)
def session_segments(version: tuple, path: str, session_id: str) -> pd.DataFrame:
    return Store(path).segments(session_id)


@st.cache_data(show_spinner=False, max_entries=16)
def session_frames(version: tuple, path: str, session_id: str) -> pd.DataFrame:
    return Store(path).frames(session_id)


@st.cache_data(show_spinner=False, max_entries=32)
def session_channels(version: tuple, path: str, session_id: str) -> pd.DataFrame:
    return Store(path).query("SELECT * FROM channels WHERE session_id = ? ORDER BY channel",
                             [session_id])


@st.cache_resource(show_spinner=False, max_entries=8)
def session_metrics(version: tuple, path: str, session_id: str | None = None) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return Store(path).session_metrics(session_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def alerts(version: tuple, path: str, session_id: str | None = None) -> pd.DataFrame:
    if "alerts" not in tables(version, path):
        return pd.DataFrame()
    return Store(path).alerts(session_id=session_id)


@st.cache_resource(show_spinner=False, max_entries=2)
def person_sessions(version: tuple, path: str) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return Store(path).person_sessions()


@st.cache_resource(show_spinner="Comparing each person with their baseline…", max_entries=2)
def baselines(version: tuple, path: str) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return Store(path).baselines()


@st.cache_data(show_spinner=False, max_entries=4)
def volatility_peaks(version: tuple, path: str) -> pd.DataFrame:
    """Where each (session, speaker)'s rolling volatility peaks: the moment to drill down to."""
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame(columns=["session_id", "speaker", "peak_t_s"])
    return Store(path).query(
        "SELECT session_id, speaker, arg_max(start_s, rolling_volatility) AS peak_t_s "
        "FROM segments WHERE rolling_volatility IS NOT NULL GROUP BY ALL")


@st.cache_data(show_spinner=False, max_entries=8)
def segment_row(version: tuple, path: str, segment_id: str) -> pd.DataFrame:
    return Store(path).query("SELECT * FROM segments WHERE segment_id = ?", [segment_id])


@st.cache_resource(show_spinner=False)
def _index_holder(path: str) -> dict:
    return {"lock": threading.Lock(), "version": None, "index": None, "stamps": {}}


def search_index(version: tuple, path: str):
    """The normalised embedding matrix, shared by all users and kept up to date in place.

    After an ingest only the new or re-ingested sessions are read (reading all 500,000
    embeddings again takes tens of seconds); a resource, not data, because cache_data would
    copy hundreds of MB on every hit.
    """
    from core import search
    h = _index_holder(path)
    with h["lock"]:
        if h["version"] == version and h["index"] is not None:
            return h["index"]
        store = Store(path)
        rows = store.query("SELECT session_id, ingested_at FROM sessions WHERE status = 'ok'")
        stamps = dict(zip(rows.session_id, rows.ingested_at))
        index = None
        if h["index"] is not None:
            index = search.updated(h["index"], h["stamps"], stamps,
                                   lambda ids, dim: store.embedding_matrix(ids, dim))
        if index is None:
            with st.spinner("Loading embeddings…"):
                meta, matrix, dropped = store.embedding_matrix()
                index = search.build_index(matrix, meta, dropped)
        h.update(version=version, index=index, stamps=stamps)
        return index


def mix_over_time(mix: pd.DataFrame, rows: pd.DataFrame, n_all: int,
                  period: str) -> pd.DataFrame:
    """Share of speech per label per day/week for the summary rows `rows` (mix: mix_table)."""
    m = mix if len(rows) == n_all else mix[mix.row.isin(rows.index.to_numpy())]
    if m.empty:
        return pd.DataFrame(columns=["period", "label", "seconds", "share"])
    g = m.groupby([period, "label"], as_index=False).seconds.sum().rename(
        columns={period: "period"})
    g["share"] = g.seconds / g.groupby("period").seconds.transform("sum")
    g["label"] = pd.Categorical(g.label, categories=LABELS, ordered=True)
    return g.sort_values(["period", "label"])
