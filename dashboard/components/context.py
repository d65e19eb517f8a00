"""Which store and which settings this dashboard serves: the database path and emoscope.toml's
operational sections (with the API keys beside the database). It imports no other component,
so sign-in (auth) and the cached reads (data) both start from it without importing each
other."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.guard import apikeys
from core.admin.settings import Settings, config_path, load_settings
from core.storage.store import DEFAULT_DB


def db_path() -> Path:
    return Path(os.environ.get("EMOSCOPE_DB", str(DEFAULT_DB)))


def settings() -> Settings:
    """[access], [retention], [storage] of emoscope.toml (the launcher passes its path) and the
    API keys beside the database; read again when either changes, so edited grants apply at
    each user's next page load."""
    path = config_path()
    try:
        stamp = path.stat().st_mtime_ns if path else 0
    except OSError:
        stamp = 0
    db = db_path()
    return _settings(str(path) if path else "", stamp, str(db), apikeys.stamp(db))


@st.cache_resource(show_spinner=False, max_entries=4)
def _settings(path: str, stamp: int, db: str, keys_stamp: int) -> Settings:
    return load_settings(path or None, db)
