"""Notes on a session: the list (stored and still pending) and the form that adds one.

The dashboard never writes to the database: a note goes to the notes spool (core.storage.notes), the
worker stores it, and until then it shows here marked pending."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.storage import notes as core_notes
from core.storage.queries import SessionFilter
from dashboard.components import auth, data, ui

AUTHOR_KEY = "note_author"


def listing(rows: pd.DataFrame, names: dict[str, str] | None = None) -> None:
    if rows.empty:
        st.caption("No notes yet.")
        return
    for n in rows.itertuples(index=False):
        where = f" · {ui.md(names.get(n.session_id, n.session_id))}" if names else ""
        badge = " · *pending: the worker stores it on its next pass*" if n.pending else ""
        st.markdown(f"**{ui.md(n.author)}** · {pd.Timestamp(n.created_at):%Y-%m-%d %H:%M} UTC"
                    f"{where}{badge}")
        st.text(n.body)


def form(session_id: str, key: str) -> None:
    """Author and text; saved to the spool on submit. With sign-in, the author is the signed-in
    user; on a loopback-only dashboard without it, whoever types a name."""
    if auth.sign_in_configured():
        author = auth.current().label
        st.caption(f"Notes are signed {ui.md(author)}.")
    else:
        author = st.text_input("Your name", key=AUTHOR_KEY, max_chars=core_notes.MAX_AUTHOR)
    with st.form(f"note_form_{key}", clear_on_submit=True):
        body = st.text_area("Note", key=f"note_body_{key}", max_chars=core_notes.MAX_BODY,
                            placeholder="What you noticed, what was agreed, what to follow up…")
        sent = st.form_submit_button("Add note")
    if sent:
        try:
            core_notes.put(data.notes_spool(), session_id, author, body)
            st.success("Note saved.")
        except core_notes.NoteError as e:
            st.warning(f"Not saved: {e}.")
        except OSError as e:
            st.error(f"Not saved: the notes folder is not writable ({e.strerror}).")


def for_sessions(k: data.Key, session_ids) -> pd.DataFrame:
    return data.notes(k, SessionFilter(session_ids=tuple(session_ids)))
