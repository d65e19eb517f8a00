"""Moving between pages, and every piece of state that travels with the user across them.

Pages never touch these session-state keys directly: they call the functions here, so "open
this session at this moment" means the same thing from every page.
"""
from __future__ import annotations

import streamlit as st

from dashboard.pages import VIEWS  # the folder of page files

# Session-state keys that outlive a page.
SESSION_KEY = "session_id"  # the session the Session page shows
SEEK_KEY = "seek"  # {"session_id", "t_s", "segment_id"}: where its player starts
SIMILAR_KEY = "similar_segment"  # the segment the Similar page searches with
LANG_KEY = "lang"  # the language toggle widget
LANG_VALUE = "lang_value"  # the language itself: a widget's state does not survive a page change
LANG_PARAM = "lang"  # ... and in the URL, so a reload keeps it too
PERSON_KEY = "person"  # the person the Person page follows
PERIOD_KEY = "period"  # the period chosen on any page with dates: every such page starts there
PERIOD_RANGE = "period_range"  # ... and its custom range

SESSION_PAGE = f"{VIEWS}/session.py"
SIMILAR_PAGE = f"{VIEWS}/similar.py"
PERSON_PAGE = f"{VIEWS}/person.py"


def page_path(name: str) -> str:
    return f"{VIEWS}/{name}.py"


def open_session(session_id: str, t_s: float | None = None,
                 segment_id: str | None = None) -> None:
    """Switch to the Session page showing `session_id`, its player at `t_s` when given."""
    st.session_state[SESSION_KEY] = session_id
    if t_s is not None:
        seek(session_id, t_s, segment_id)
    st.switch_page(SESSION_PAGE, query_params={"session": session_id, **lang_param()})


def seek(session_id: str, t_s: float, segment_id: str | None = None) -> None:
    """Move the session's player (and the segment shown at the cursor) to `t_s`."""
    st.session_state[SEEK_KEY] = {"session_id": session_id, "t_s": float(t_s),
                                  "segment_id": segment_id}


def seek_time(session_id: str) -> float:
    s = st.session_state.get(SEEK_KEY)
    return float(s["t_s"]) if isinstance(s, dict) and s.get("session_id") == session_id else 0.0


def seek_segment(session_id: str) -> str | None:
    """The segment the last seek named, when it was in this session."""
    s = st.session_state.get(SEEK_KEY)
    return s.get("segment_id") if isinstance(s, dict) and s.get("session_id") == session_id \
        else None


def wanted_session() -> str | None:
    """The session asked for by the URL, else the one last shown."""
    return st.query_params.get("session") or st.session_state.get(SESSION_KEY)


def remember_session(session_id: str) -> None:
    if session_id != st.query_params.get("session"):
        st.query_params["session"] = session_id
    st.session_state[SESSION_KEY] = session_id


def last_session() -> str | None:
    return st.session_state.get(SESSION_KEY)


def find_similar(segment_id: str) -> None:
    """Switch to the Similar page searching with this segment."""
    st.session_state[SIMILAR_KEY] = segment_id
    st.switch_page(SIMILAR_PAGE)


def similar_query() -> str:
    return st.session_state.get(SIMILAR_KEY, "")


def open_person(person: str) -> None:
    """Switch to the Person page following `person`."""
    st.session_state[PERSON_KEY] = person
    st.switch_page(PERSON_PAGE, query_params={"person": person, **lang_param()})


def wanted_person() -> str | None:
    return st.query_params.get("person") or st.session_state.get(PERSON_KEY)


def remember_person(person: str) -> None:
    if person != st.query_params.get("person"):
        st.query_params["person"] = person
    st.session_state[PERSON_KEY] = person


# -- the label language: session state for the pages, the URL for a reload ----------------------
def lang_param() -> dict:
    lang = st.session_state.get(LANG_VALUE, "en")
    return {LANG_PARAM: lang} if lang != "en" else {}


def restore_lang() -> None:
    """After a reload the session state is new: take the language from the URL."""
    if LANG_VALUE not in st.session_state:
        wanted = st.query_params.get(LANG_PARAM)
        st.session_state[LANG_VALUE] = wanted if wanted in ("en", "zh") else "en"


def keep_lang_in_url() -> None:
    lang = st.session_state.get(LANG_VALUE, "en")
    if lang != "en" and st.query_params.get(LANG_PARAM) != lang:
        st.query_params[LANG_PARAM] = lang
    elif lang == "en" and LANG_PARAM in st.query_params:
        del st.query_params[LANG_PARAM]


# -- the period: one choice for every page with dates ---------------------------------------------
def period_choice(default: str) -> str:
    return st.session_state.get(PERIOD_KEY, default)


def keep_period(choice: str) -> None:
    st.session_state[PERIOD_KEY] = choice


def period_range():
    return st.session_state.get(PERIOD_RANGE)


def keep_period_range(value) -> None:
    st.session_state[PERIOD_RANGE] = value
