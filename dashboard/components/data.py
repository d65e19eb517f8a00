"""Cached reads of the store for the pages: st.cache_* wrappers over core.queries.Reader.

Every cached function takes the DB's version (mtime and size of the file and its WAL) as an
argument, so a new ingest changes the cache key and the next rerun shows the new data without a
restart. Connections are opened per read by `Store` (read-only, retried while a writer holds
the lock) and never kept.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pandas as pd
import streamlit as st

from core import aggregates
from core import notes as core_notes
from core.labels import LABELS
from core.queries import EVERY, Reader, SessionFilter
from core.rules import USER_RULES, Rules, RulesError, load_rules
from core.store import DEFAULT_DB, Store


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


def reader(path: str | None = None) -> Reader:
    return Reader(Store(path or db_path(), retry_s=10.0))


@st.cache_data(show_spinner=False, max_entries=4)
def tables(version: tuple, path: str) -> set[str]:
    return reader(path).tables()


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


def rules() -> Rules | None:
    """The analytics rules (emoscope.toml over the defaults); None when the file is broken.
    Read again when the file changes."""
    chosen = os.environ.get("EMOSCOPE_RULES") or (USER_RULES if Path(USER_RULES).is_file()
                                                  else None)
    try:
        stamp = Path(chosen).stat().st_mtime_ns if chosen else 0
    except OSError:
        stamp = -1
    return _rules(chosen, stamp)


@st.cache_resource(show_spinner=False, max_entries=4)
def _rules(path: str | None, stamp: int) -> Rules | None:
    try:
        return load_rules(path)
    except RulesError:
        return None


@st.cache_data(show_spinner=False, max_entries=4)
def n_sessions(version: tuple, path: str) -> int:
    return reader(path).n_sessions()


@st.cache_data(show_spinner=False, max_entries=4)
def models(version: tuple, path: str) -> pd.DataFrame:
    return reader(path).models()


@st.cache_data(show_spinner=False, max_entries=4)
def latest_model(version: tuple, path: str) -> tuple[str, str | None] | None:
    return reader(path).latest_model()


# The summary, the mix and the index are shared resources, not copies: at 10,000 sessions
# unpickling a fresh copy on every rerun costs more than the page itself. Callers never
# modify them in place (they filter, assign or copy).
@st.cache_resource(show_spinner=False, max_entries=2)
def session_summary(version: tuple, path: str) -> pd.DataFrame:
    return reader(path).summary()


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
    return aggregates.mix_table(label_seconds(version, path), session_summary(version, path))


@st.cache_resource(show_spinner=False, max_entries=2)
def label_seconds(version: tuple, path: str) -> pd.DataFrame:
    return reader(path).label_seconds()


@st.cache_data(show_spinner=False, max_entries=32)
def session_segments(version: tuple, path: str, session_id: str) -> pd.DataFrame:
    return reader(path).segments(session_id)


@st.cache_data(show_spinner=False, max_entries=16)
def session_frames(version: tuple, path: str, session_id: str) -> pd.DataFrame:
    return reader(path).frames(session_id)


@st.cache_data(show_spinner=False, max_entries=32)
def session_channels(version: tuple, path: str, session_id: str) -> pd.DataFrame:
    return reader(path).channels(session_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def session_metrics(version: tuple, path: str, session_id: str | None = None) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return reader(path).session_metrics(_only(session_id))


@st.cache_resource(show_spinner=False, max_entries=8)
def alerts(version: tuple, path: str, session_id: str | None = None) -> pd.DataFrame:
    if "alerts" not in tables(version, path):
        return pd.DataFrame()
    return reader(path).alerts(_only(session_id))


def _only(session_id: str | None) -> SessionFilter:
    return EVERY if session_id is None else SessionFilter.of(session_id)


@st.cache_resource(show_spinner=False, max_entries=2)
def person_sessions(version: tuple, path: str) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return reader(path).person_sessions()


@st.cache_resource(show_spinner="Comparing each person with their baseline…", max_entries=2)
def baselines(version: tuple, path: str) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path) or rules() is None:
        return pd.DataFrame()
    return reader(path).baselines(rules())


@st.cache_data(show_spinner=False, max_entries=4)
def volatility_peaks(version: tuple, path: str) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame(columns=["session_id", "speaker", "peak_t_s"])
    return reader(path).volatility_peaks()


def export_segments(session_id: str) -> pd.DataFrame:
    """One session's segments for its downloads; read when a download is clicked."""
    return reader().export_segments(SessionFilter.of(session_id))


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
        r = reader(path)
        stamps = r.ingest_stamps()
        index = None
        if h["index"] is not None:
            index = search.updated(h["index"], h["stamps"], stamps, lambda ids, dim: (
                r.embedding_matrix(SessionFilter(session_ids=tuple(ids)), dim)))
        if index is None:
            with st.spinner("Loading embeddings…"):
                meta, matrix, dropped = r.embedding_matrix()
                index = search.build_index(matrix, meta, dropped)
        h.update(version=version, index=index, stamps=stamps)
        return index


# -- the supervisor's, the analyst's and the alert views --------------------------------------
@st.cache_data(show_spinner="Judging alerts…", max_entries=16)
def judged_alerts(version: tuple, path: str, f: SessionFilter, digest: str,
                  _rules: Rules) -> pd.DataFrame:
    """Alerts of the sessions `f` covers under `_rules` (keyed by its digest), through the same
    rules code and reference as the stored ones (core.rejudge)."""
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return reader(path).judged_alerts(_rules, f)


@st.cache_data(show_spinner=False, max_entries=8)
def window_alerts(version: tuple, path: str, f: SessionFilter) -> pd.DataFrame:
    """The stored alerts of the sessions `f` covers."""
    if "alerts" not in tables(version, path):
        return pd.DataFrame()
    return reader(path).alerts(f)


@st.cache_data(show_spinner=False, max_entries=4)
def stale_sessions(version: tuple, path: str, digest: str, _rules: Rules) -> int:
    """How many sessions were stored under other rules than the rules file's now."""
    if "session_metrics" not in tables(version, path):
        return 0
    return len(reader(path).stale_sessions(_rules))


@st.cache_data(show_spinner=False, max_entries=8)
def session_table(version: tuple, path: str, f: SessionFilter = EVERY) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return reader(path).session_table(f)


@st.cache_data(show_spinner=False, max_entries=8)
def agent_scorecards(version: tuple, path: str, f: SessionFilter = EVERY) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path):
        return pd.DataFrame()
    return reader(path).agent_scorecards(f)


@st.cache_data(show_spinner=False, max_entries=16)
def journey(version: tuple, path: str, person: str, role: str | None) -> pd.DataFrame:
    if "session_metrics" not in tables(version, path) or rules() is None:
        return pd.DataFrame()
    return reader(path).journey(person, rules(), role=role)


def notes_spool() -> Path:
    return core_notes.spool_dir(db_path())


def notes(f: SessionFilter) -> pd.DataFrame:
    """Stored and still-pending notes: read on every run (the spool changes without the
    database), so a note shows the moment it is saved."""
    return reader().notes_with_pending(notes_spool(), f)
