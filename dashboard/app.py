"""Entry point: only builds the navigation; the pages live in dashboard/pages/."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.components import ui  # noqa: E402

HERE = Path(__file__).resolve().parent
PAGES = [("overview.py", "Overview", ":material/dashboard:"),
         ("session.py", "Session", ":material/graphic_eq:"),
         ("alerts.py", "Volatility & alerts", ":material/notifications:"),
         ("similar.py", "Similar moments", ":material/join_inner:"),
         ("reports.py", "Reports", ":material/download:"),
         ("upload.py", "Upload", ":material/upload:")]  # shown once its page file exists

st.set_page_config(page_title="Emoscope", page_icon="🎧", layout="wide")
nav = st.navigation([st.Page(f"pages/{f}", title=t, icon=i, default=(f == "overview.py"))
                     for f, t, i in PAGES if (HERE / "pages" / f).exists()])
ui.sidebar()
nav.run()
