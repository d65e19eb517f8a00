"""Cached reads of the store for the pages: st.cache_* wrappers over core.storage.queries.Reader,
the core.insight functions of a Reader, and similar-moment and word searches.

Every cached function takes a `Key`: the DB's version (mtime and size of the file and its WAL),
its path, and the viewer. A new ingest changes the version, so the next rerun shows the new data
without a restart; the viewer is part of every key, so one person's cached rows are never
another's, and every read is made by a Reader holding that viewer's scope. Connections are
opened per read by `Store` (read-only, retried while a writer holds the lock) and never kept.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from core.analysis import aggregates
from core.storage import corrections as core_corrections
from core.storage import notes as core_notes
from core.guard.access import Viewer, operator
from core.insight import people, rejudged, rollups
from core.base.labels import LABELS
from core.storage.queries import EVERY, Reader, SessionFilter
from core.analysis.rules import Rules, RulesError, load_rules
from core.base.config_file import config_path
from core.storage.store import Store, file_version
from dashboard.components.context import db_path, settings  # noqa: F401  (pages call data.*)


def db_version(path: Path | None = None) -> tuple:
    """Changes whenever a writer commits: the file or its write-ahead log moves."""
    return file_version(path or db_path())


class Key(NamedTuple):
    """What every cached read depends on."""
    version: tuple
    path: str
    viewer: Viewer


def store() -> Store:
    return Store(db_path(), retry_s=10.0)


def reader(k: Key) -> Reader:
    """A Reader with the viewer's scope: the only way pages read."""
    return Reader(Store(k.path, retry_s=10.0), k.viewer, settings().audio_root)


@st.cache_data(show_spinner=False, max_entries=16)
def tables(version: tuple, path: str) -> set[str]:
    return Reader(Store(path, retry_s=10.0), operator()).tables()


def state() -> Key:
    """The cache key every read below takes, for the signed-in viewer (set by app.py)."""
    from dashboard.components import auth
    p = db_path()
    return Key(db_version(p), str(p), auth.current())


def ready() -> bool:
    """The DB exists and holds at least one session this viewer may see."""
    p = db_path()
    if not p.exists():
        return False
    k = state()
    return "sessions" in tables(k.version, k.path) and n_sessions(k) > 0


def rules() -> Rules | None:
    """The analytics rules (emoscope.toml over the defaults); None when the file is broken.
    Read again when the file changes."""
    found = config_path()
    chosen = str(found) if found else None
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


@st.cache_data(show_spinner=False, max_entries=16)
def n_sessions(k: Key) -> int:
    return reader(k).n_sessions()


@st.cache_data(show_spinner=False, max_entries=16)
def known_values(k: Key, column: str) -> list[str]:
    """The teams, agents or customers among the sessions this viewer may see."""
    return reader(k).known_values(column)


@st.cache_data(show_spinner=False, max_entries=16)
def models(k: Key) -> pd.DataFrame:
    return reader(k).models()


@st.cache_data(show_spinner=False, max_entries=16)
def latest_model(k: Key) -> tuple[str, str | None] | None:
    return reader(k).latest_model()


# The summary, the mix and the index are shared resources, not copies: at 10,000 sessions
# unpickling a fresh copy on every rerun costs more than the page itself. Callers never
# modify them in place (they filter, assign or copy).
@st.cache_resource(show_spinner=False, max_entries=8)
def session_summary(k: Key) -> pd.DataFrame:
    return reader(k).summary()


@st.cache_resource(show_spinner=False, max_entries=8)
def summary_options(k: Key) -> dict:
    """The choices each overview filter offers, computed once per DB version."""
    s = session_summary(k)
    when = s["when"].dropna()
    flat = lambda col: sorted({x for v in s[col] for x in v})  # noqa: E731
    vals = lambda col: sorted({str(x) for x in s[col].dropna()})  # noqa: E731
    return {"dates": (when.min().date(), when.max().date()) if len(when) else None,
            "agents": vals("agent_id"), "teams": vals("team"),
            "people": sorted(set(vals("customer_id")) | set(vals("agent_id"))),
            "roles": flat("speakers"), "flags": flat("flags"),
            "categories": flat("categories"),
            "dominant": sorted(set(s.dominant.dropna()), key=LABELS.index)}


@st.cache_resource(show_spinner=False, max_entries=8)
def session_choices(k: Key) -> tuple[list[str], dict[str, str]]:
    """Session ids, newest first, and the text the session picker shows for each."""
    s = session_summary(k).sort_values("when", ascending=False,
                                                   na_position="last")
    text = {sid: f"{name} · {w:%Y-%m-%d %H:%M} · {sid}" if pd.notna(w) else f"{name} · {sid}"
            for sid, name, w in zip(s.session_id, s.file_name, s["when"])}
    return s.session_id.tolist(), text


@st.cache_resource(show_spinner=False, max_entries=8)
def mix_table(k: Key) -> pd.DataFrame:
    return aggregates.mix_table(label_seconds(k), session_summary(k))


@st.cache_resource(show_spinner=False, max_entries=8)
def label_seconds(k: Key) -> pd.DataFrame:
    return reader(k).label_seconds()


@st.cache_data(show_spinner=False, max_entries=32)
def session_segments(k: Key, session_id: str) -> pd.DataFrame:
    return reader(k).segments(session_id)


@st.cache_data(show_spinner=False, max_entries=32)
def session_transcript(k: Key, session_id: str) -> pd.DataFrame:
    """What was said, line by line, each with the emotion of the segment it lies in."""
    if "utterances" not in tables(k.version, k.path):
        return pd.DataFrame()
    return reader(k).transcript(session_id)


@st.cache_data(show_spinner=False, max_entries=16)
def session_categories(k: Key, session_id: str) -> pd.DataFrame:
    """The categories (core/analysis/categories) one session meets."""
    if "session_categories" not in tables(k.version, k.path):
        return pd.DataFrame()
    return reader(k).categories(SessionFilter.of(session_id))


@st.cache_data(show_spinner=False, max_entries=32)
def session_events(k: Key, session_id: str) -> pd.DataFrame:
    if "audio_events" not in tables(k.version, k.path):
        return pd.DataFrame()
    return reader(k).audio_events(SessionFilter.of(session_id))


@st.cache_data(show_spinner=False, max_entries=16)
def session_frames(k: Key, session_id: str) -> pd.DataFrame:
    return reader(k).frames(session_id)


@st.cache_data(show_spinner=False, max_entries=32)
def session_channels(k: Key, session_id: str) -> pd.DataFrame:
    return reader(k).channels(session_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def session_metrics(k: Key, session_id: str | None = None) -> pd.DataFrame:
    if "session_metrics" not in tables(k.version, k.path):
        return pd.DataFrame()
    return reader(k).session_metrics(_only(session_id))


@st.cache_resource(show_spinner=False, max_entries=8)
def alerts(k: Key, session_id: str | None = None) -> pd.DataFrame:
    if "alerts" not in tables(k.version, k.path):
        return pd.DataFrame()
    return reader(k).alerts(_only(session_id))


def _only(session_id: str | None) -> SessionFilter:
    return EVERY if session_id is None else SessionFilter.of(session_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def person_sessions(k: Key) -> pd.DataFrame:
    if "session_metrics" not in tables(k.version, k.path):
        return pd.DataFrame()
    return people.person_sessions(reader(k))


@st.cache_resource(show_spinner="Comparing each person with their baseline…", max_entries=8)
def baselines(k: Key) -> pd.DataFrame:
    if "session_metrics" not in tables(k.version, k.path) or rules() is None:
        return pd.DataFrame()
    return people.baselines(reader(k), rules())


@st.cache_data(show_spinner=False, max_entries=16)
def volatility_peaks(k: Key) -> pd.DataFrame:
    if "session_metrics" not in tables(k.version, k.path):
        return pd.DataFrame(columns=["session_id", "speaker", "peak_t_s"])
    return reader(k).volatility_peaks()


def export_segments(k: Key, session_id: str) -> pd.DataFrame:
    """One session's segments for its downloads; read when a download is clicked."""
    return reader(k).export_segments(SessionFilter.of(session_id))


@st.cache_data(show_spinner=False, max_entries=64)
def session_ids(k: Key) -> frozenset[str]:
    """Every session (ok or failed) the viewer may see."""
    return frozenset(reader(k).session_rows().session_id)


# -- similar moments and patterns: the ANN index beside the store (core.index.similar) ---------------
@st.cache_data(show_spinner=False, max_entries=16)
def similar_space(k: Key) -> tuple[str, int, int] | None:
    """(model, dim, segments) of the largest embedding space of the store, or None."""
    from core.index import segment_index
    found = segment_index.spaces(reader(k).store)
    return (found[0].model, found[0].dim, found[0].n) if found else None


@st.cache_data(show_spinner=False, max_entries=64)
def segment_info(k: Key, segment_id: str) -> dict | None:
    """A segment the viewer may see, with its index space and key; None otherwise."""
    return reader(k).segment_space(segment_id)


@st.cache_data(show_spinner="Searching…", max_entries=64)
def similar(k: Key, segment_id: str, n: int, speakers: tuple, labels: tuple, teams: tuple,
            since, until, other_sessions: bool):
    """core.index.similar.similar_to through the viewer's Reader (the index is opened once per
    process and checked against the store on each new DB version)."""
    from core.index.similar import similar_to
    return similar_to(reader(k), segment_id, n, list(speakers), list(labels), list(teams),
                      since, until, other_sessions)


def similar_to_vector(k: Key, model: str, dim: int, vector, n: int, speakers: tuple,
                      labels: tuple, teams: tuple, since, until):
    """Neighbours of an uploaded clip's embedding (not cached: each clip is new)."""
    from core.index.similar import neighbours
    return neighbours(reader(k), model, dim, vector, n, list(speakers), list(labels),
                      list(teams), since, until)


@st.cache_data(show_spinner=False, max_entries=8)
def similar_map(k: Key, model: str, dim: int, n: int = 3000) -> tuple[pd.DataFrame, tuple]:
    """A seeded sample of at most n segments the viewer may see (with a non-zero embedding),
    placed by a 2-D PCA of their stored vectors (x, y, label, segment_id, speaker,
    confidence, session_id, start_s), and the PCA's (mean, axes) that place any other
    vector on the same map. Its most confident moments are the Similar page's choices."""
    import numpy as np

    from core.index import segment_index
    from core.index.similar import index_for, pca_basis
    r = reader(k)
    keys = r.segment_keys(model, dim)
    if len(keys) > n:
        keys = np.sort(np.random.default_rng(0).choice(keys, n, replace=False))
    ix = index_for(r.store, segment_index.Space(model, dim))
    keys = keys[ix.contains(keys)]
    vecs = ix.vectors(keys)
    moving = np.abs(vecs).sum(axis=1) > 0  # a zero embedding has no place (and no neighbours)
    keys, vecs = keys[moving], vecs[moving]
    mean, axes = pca_basis(vecs)
    xy = (vecs - mean) @ axes.T if len(vecs) else np.zeros((0, 2))
    m = r.segments_by_key(keys).set_index("segment_key").reindex(keys)
    out = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": m.label.to_numpy(),
                        "segment_id": m.segment_id.to_numpy(), "speaker": m.speaker.to_numpy(),
                        "confidence": m.confidence.to_numpy(),
                        "session_id": m.session_id.to_numpy(), "start_s": m.start_s.to_numpy()})
    return out, (mean, axes)  # the basis places the query and the results on the same map


def map_places(k: Key, model: str, dim: int, basis, segment_ids) -> "np.ndarray":
    """(n, 2) places on the Similar page's map of these segments (of the viewer's scope:
    the caller passes ids it was given by a scoped search)."""
    import numpy as np

    from core.index import segment_index
    from core.index.similar import index_for
    from core.storage.vector_keys import key_of
    ix = index_for(reader(k).store, segment_index.Space(model, dim))
    keys = np.array([key_of(s) for s in segment_ids], np.uint64)
    keys = keys[ix.contains(keys)] if len(keys) else keys
    if not len(keys):
        return np.zeros((0, 2))
    mean, axes = basis
    return (ix.vectors(keys) - mean) @ axes.T


# -- search by words: the FTS5 index beside the store (core.index.word_search) ------------------------
@st.cache_data(show_spinner="Searching…", max_entries=64)
def word_search(k: Key, query: str, filters, limit: int):
    """core.index.word_search.search through the viewer's Reader; None when the store keeps no
    transcripts."""
    from core.index import word_index, word_search as ws
    try:
        return ws.search(reader(k), query, filters, limit)
    except word_index.NoTranscripts:
        return None


@st.cache_data(show_spinner=False, max_entries=8)
def patterns(k: Key) -> pd.DataFrame:
    return reader(k).patterns()


@st.cache_resource(show_spinner="Reading the patterns…", max_entries=4)
def pattern_segments(k: Key) -> pd.DataFrame:
    """Every segment of the latest pattern run the viewer may see (no embeddings)."""
    return reader(k).pattern_segments()


@st.cache_data(show_spinner=False, max_entries=8)
def pattern_map(k: Key, n: int = 20_000) -> pd.DataFrame:
    """A seeded sample of at most n of them, for the map."""
    return reader(k).pattern_segments(sample=n)


@st.cache_data(show_spinner=False, max_entries=8)
def pattern_representatives(k: Key) -> pd.DataFrame:
    return reader(k).pattern_segments(representatives=True)


# -- the supervisor's, the analyst's and the alert views --------------------------------------
@st.cache_data(show_spinner="Judging alerts…", max_entries=16)
def judged_alerts(k: Key, f: SessionFilter, digest: str,
                  _rules: Rules) -> pd.DataFrame:
    """Alerts of the sessions `f` covers under `_rules` (keyed by its digest), through the same
    rules code and reference as the stored ones (core.analysis.rejudge)."""
    if "session_metrics" not in tables(k.version, k.path):
        return pd.DataFrame()
    return rejudged.judged_alerts(reader(k), _rules, f)


@st.cache_data(show_spinner=False, max_entries=8)
def window_alerts(k: Key, f: SessionFilter) -> pd.DataFrame:
    """The stored alerts of the sessions `f` covers."""
    if "alerts" not in tables(k.version, k.path):
        return pd.DataFrame()
    return reader(k).alerts(f)


@st.cache_data(show_spinner=False, max_entries=4)
def stale_sessions(k: Key, digest: str, _rules: Rules) -> int:
    """How many sessions were stored under other rules than the rules file's now."""
    if "session_metrics" not in tables(k.version, k.path):
        return 0
    return len(rejudged.stale_sessions(reader(k), _rules))


@st.cache_data(show_spinner=False, max_entries=8)
def session_table(k: Key, f: SessionFilter = EVERY) -> pd.DataFrame:
    if "session_metrics" not in tables(k.version, k.path):
        return pd.DataFrame()
    return rollups.session_table(reader(k), f)


@st.cache_data(show_spinner=False, max_entries=8)
def agent_scorecards(k: Key, f: SessionFilter = EVERY) -> pd.DataFrame:
    if "session_metrics" not in tables(k.version, k.path):
        return pd.DataFrame()
    return rollups.agent_scorecards(reader(k), f)


@st.cache_data(show_spinner=False, max_entries=16)
def journey(k: Key, person: str, role: str | None) -> pd.DataFrame:
    if "session_metrics" not in tables(k.version, k.path) or rules() is None:
        return pd.DataFrame()
    return people.journey(reader(k), person, rules(), role=role)


@st.cache_data(show_spinner=False, max_entries=16)
def words_and_voice(k: Key, person: str, role: str | None) -> pd.DataFrame:
    """A person's entries with their words beside their voice (core.insight.people.words_and_voice)."""
    if "utterances" not in tables(k.version, k.path) or rules() is None:
        return pd.DataFrame()
    return people.words_and_voice(reader(k), person, rules(), role=role)


def notes_spool() -> Path:
    return core_notes.spool_dir(db_path())


def notes(k: Key, f: SessionFilter) -> pd.DataFrame:
    """Stored and still-pending notes: read on every run (the spool changes without the
    database), so a note shows the moment it is saved."""
    return reader(k).notes_with_pending(notes_spool(), f)


# -- calibration (core/storage/corrections, core/storage/heads) --------------------------------------------------
def corrections_spool() -> Path:
    return core_corrections.spool_dir(db_path())


def corrections(k: Key, f: SessionFilter = EVERY) -> pd.DataFrame:
    """Stored and still-pending corrections in scope: read on every run (the spool changes
    without the database), so a label shows the moment it is saved."""
    return reader(k).corrections_with_pending(corrections_spool(), f)


@st.cache_data(show_spinner=False, max_entries=16)
def heads(k: Key) -> pd.DataFrame:
    return reader(k).heads()


@st.cache_data(show_spinner=False, max_entries=16)
def head_activations(k: Key) -> pd.DataFrame:
    return reader(k).head_activations()


@st.cache_data(show_spinner=False, max_entries=16)
def active_head(k: Key):
    return reader(k).active_head()


def label_choices() -> list[str]:
    """The nine and the organisation's own labels ([calibration.labels])."""
    return core_corrections.choices(settings().labels)
