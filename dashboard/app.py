"""Entry point: who is looking, then the navigation of the pages they may open.

`streamlit run dashboard/app.py` works as it is (`emoscope dashboard` does just that). An
unauthenticated browser gets the sign-in page and nothing else: no other page is registered
for it, so no URL reaches one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.base.private import private_umask  # noqa: E402
from core.admin.settings import SettingsError  # noqa: E402
from dashboard import pages as page_list  # noqa: E402
from dashboard.components import auth, ui  # noqa: E402

private_umask()  # uploads and anything else this process writes: 0600 / 0700
st.set_page_config(page_title="Emoscope", page_icon="🎧", layout="wide")
refused = auth.host_refusal()  # before anything else: a foreign Host gets one sentence
if refused:
    st.error(f"Nothing is shown here: {refused}. Open the dashboard at its own address.")
    st.stop()
try:
    viewer = auth.resolve()
except SettingsError as e:  # fail closed: a broken [access] grants nothing
    st.error(f"emoscope.toml cannot be used: {e}")
    st.stop()
if viewer is None:
    st.navigation([st.Page(auth.sign_in_page, title="Sign in", default=True)],
                  position="hidden").run()
    st.stop()
if auth.sign_in_configured() and not auth.record_sign_in(viewer):
    st.stop()  # an act that cannot be audited does not happen: here, the whole visit
if not viewer.roles:
    st.navigation([st.Page(auth.no_role_page, title="No access", default=True)],
                  position="hidden").run()
    st.stop()
chosen = page_list.for_viewer(viewer)  # dashboard/pages.py: every page, listed once
pages = st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=(p is chosen[0]))
                       for p in chosen])
ui.sidebar()
auth.sidebar()
pages.run()
