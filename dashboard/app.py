"""Entry point: only builds the navigation; the pages live in dashboard/views/.

`streamlit run dashboard/app.py` works as it is (`emoscope dashboard` does just that).
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.components import nav, ui  # noqa: E402

PAGES = [("overview.py", "Overview", ":material/dashboard:"),
         ("session.py", "Session", ":material/graphic_eq:"),
         ("agents.py", "Agents", ":material/support_agent:"),
         ("person.py", "Person", ":material/person:"),
         ("alerts.py", "Volatility & alerts", ":material/notifications:"),
         ("similar.py", "Similar moments", ":material/join_inner:"),
         ("reports.py", "Reports", ":material/download:"),
         ("upload.py", "Upload", ":material/upload:")]

st.set_page_config(page_title="Emoscope", page_icon="🎧", layout="wide")
pages = st.navigation([st.Page(f"{nav.VIEWS}/{f}", title=t, icon=i, default=(f == "overview.py"))
                       for f, t, i in PAGES])
ui.sidebar()
pages.run()
