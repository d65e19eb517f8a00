"""Upload: drop recordings with optional metadata; they wait in the inbox for the worker.

The page never writes to the database (the worker is its only writer): it stores each file in
the inbox under a generated name and shows the jobs table, read-only, refreshing on its own.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core.intake import inbox
from core.base import models, places
from core.storage.store import StoreBusy
from dashboard.components import auth, data, ui
from dashboard.launch import upload_limit_mb

ICONS = {"waiting": "⏳ waiting for the worker", "queued": "🕒 queued", "running": "⚙️ running",
         "done": "✅ done", "failed": "❌ failed"}
ROLE_CHOICES = {"default (stereo: agent, customer)": None, "agent, customer": ["agent", "customer"],
                "customer, agent": ["customer", "agent"], "one speaker": ["speaker"]}


def limit_mb() -> int:
    """The same limit the launcher gave the server ($EMOSCOPE_UPLOAD_MB, else 500)."""
    return upload_limit_mb()


def inbox_dir() -> Path:
    """$EMOSCOPE_INBOX when set and inside the data directory, else inbox/ next to the DB."""
    home = inbox.data_dir_of(data.db_path())
    chosen = os.environ.get("EMOSCOPE_INBOX")
    return inbox.check_inside(chosen, home, "inbox") if chosen \
        else places.folder(data.db_path(), places.INBOX)


NONE, OTHER = "(none)", "Other…"


def known(column: str) -> list[str]:
    """The values of a session column this viewer's stored sessions hold (none before the first)."""
    return data.known_values(data.state(), column) if data.ready() else []


def choice(where, label: str, key: str, values: list[str]) -> str:
    """One of the known values, or a new one typed after choosing "Other…": a choice keeps
    spellings apart from typos ("Support" beside "support") while still allowing a new name."""
    picked = where.selectbox(label, [NONE, *values, OTHER], key=key)
    if picked == OTHER:
        return where.text_input(f"New {label.lower()}", key=f"{key}_new", max_chars=120)
    return "" if picked == NONE else picked


def metadata_form() -> dict:
    c1, c2, c3 = st.columns(3)
    agent = choice(c1, "Agent", "up_agent", known("agent_id"))
    person = c2.text_input("Customer / person", key="up_person", max_chars=120)
    viewer = auth.current()
    if viewer.scope.everything:
        team = choice(c3, "Team", "up_team", known("team"))
    else:  # a supervisor files recordings under one of their own teams only
        team = c3.selectbox("Team", sorted(viewer.scope.teams), key="up_team") or ""
    c4, c5, c6, c7 = st.columns([1, 1, 2, 2])
    day = c4.date_input("Recorded on", value=None, key="up_date")
    clock = c5.time_input("at", value=None, key="up_time", step=60)
    tags = c6.text_input("Tags (comma-separated)", key="up_tags", max_chars=400)
    roles = c7.selectbox("Channel roles", list(ROLE_CHOICES), key="up_roles")
    when = None
    if isinstance(day, dt.date):
        when = dt.datetime.combine(day, clock).isoformat(timespec="minutes") \
            if isinstance(clock, dt.time) else day.isoformat()
    return {"agent_id": agent.strip(), "customer_id": person.strip(), "team": team.strip(),
            "recorded_at": when,
            "tags": [t.strip() for t in tags.split(",") if t.strip()],
            "roles": ROLE_CHOICES[roles]}


FLASH_KEY = "up_flash"  # what the last submit said, shown after the rerun that clears the files


def save_uploads(files, meta: dict, box: Path) -> list[tuple[str, str]]:
    """Each file into the inbox; returns what to tell the user, as (kind, text)."""
    max_bytes = limit_mb() * 1024 * 1024
    saved, said = 0, []
    refused = data.settings().access.tags_refused(auth.current(), meta.get("tags") or ())
    if refused:  # the same rule as the API's (core.guard.access.AccessConfig.tags_refused)
        return [("error", f"Not queued: the tag {ui.md(', '.join(refused))} files a recording "
                          "into a programme you do not follow; only its own people and admins "
                          "use it.")]
    for f in files:
        shown = ui.md(inbox.display_name(f.name))
        if not auth.record("upload", inbox.display_name(f.name),
                           {k: v for k, v in meta.items() if k in ("team", "agent_id")}):
            return said
        try:
            inbox.put(box, f.name, f, meta, max_bytes=max_bytes)
            saved += 1
        except inbox.InboxError as e:
            said.append(("error", f"{shown}: not queued, {ui.md(e)}."))
        except OSError as e:
            said.append(("error", f"{shown}: could not be saved "
                                  f"({ui.md(e.strerror or type(e).__name__)})."))
    if saved:
        said.append(("success", f"{saved} file{'s' if saved != 1 else ''} queued for analysis."))
    return said


def worker_model() -> str:
    """The model to start a worker with: the one behind the stored sessions (uploads must be
    analysed by the same model to compare), else the default."""
    made_by = data.latest_model(data.state()) if data.ready() else None
    if made_by is None:
        return "emotion2vec_plus_large"
    name, path = made_by
    # The model's name, never its resolved directory: a worker started with the path would
    # store uploads under a second name and similar moments would not find the stored ones.
    return models.loadable(name, path)


def worker_note(box: Path) -> None:
    beat = inbox.heartbeat_age(box)
    if beat is None or beat > 30:
        model = worker_model()
        hint = " (`--model tiny-random` runs without the real weights; its labels mean " \
            "nothing)" if model == "emotion2vec_plus_large" else ""
        st.warning("No worker is running, so files wait in the inbox. Start one with  \n"
                   f"`emoscope worker --db {data.db_path()} --model {model}`{hint}",
                   icon="⏸️")


def job_rows(box: Path) -> pd.DataFrame:
    rows = pd.DataFrame()
    p = data.db_path()
    if p.exists():
        try:
            rows = data.reader(data.state()).jobs()
        except StoreBusy:
            st.caption("The database is busy; showing the last known state.")
            return st.session_state.get("up_last_rows", pd.DataFrame())
        except Exception as e:  # e.g. no jobs table before the first worker run
            if "jobs" not in str(e):
                raise
    taken = set(rows.file_name) if len(rows) else set()
    waiting = []
    for f in inbox.waiting(box):
        if f.name in taken:
            continue
        original, meta, _ = inbox.read_sidecar(f)
        if not auth.current().scope.covers(meta.get("team"), meta.get("tags")):
            continue
        waiting.append({"original_name": original or inbox.display_name(f.name),
                        "file_name": f.name, "status": "waiting"})
    out = pd.concat([pd.DataFrame(waiting), rows], ignore_index=True) if waiting else rows
    st.session_state["up_last_rows"] = out
    return out


@st.fragment(run_every=2)
def status_panel(box: Path) -> None:
    rows = job_rows(box)
    worker_note(box)
    if rows.empty:
        st.info("Nothing uploaded yet.")
        return
    counts = rows.status.value_counts()
    # A job that finished changes what the page's banner and counts say: run the whole page
    # again (the fragment alone would leave the banner as it was).
    finished = int(counts.get("done", 0)) + int(counts.get("failed", 0))
    seen = st.session_state.get("up_finished_seen")
    st.session_state["up_finished_seen"] = finished
    if seen is not None and finished != seen:
        st.rerun()
    cols = st.columns(5)
    for col, status in zip(cols, ["waiting", "queued", "running", "done", "failed"]):
        col.metric(status, int(counts.get(status, 0)))
    show = pd.DataFrame({
        "file": rows.original_name.fillna(rows.file_name),
        "status": rows.status.map(ICONS),
        "reason": rows.get("error"),
        "session": rows.get("session_id"),
        "tries": rows.get("attempts"),
        "queued at": rows.get("created_at"),
        "finished at": rows.get("finished_at"),
    })
    st.dataframe(ui.blank(show), hide_index=True, width="stretch", key="up_jobs")
    st.caption(f"Updated {time.strftime('%H:%M:%S')}; refreshes every 2 s.")


def main() -> None:
    st.title("Upload recordings")
    ui.banner()
    if not auth.current().can_upload:
        st.error("Your role does not include uploading recordings.")
        return
    box = inbox_dir()
    st.caption(f"Files go to the inbox ({box}); the worker analyses them one at a time. "
               f"Up to {limit_mb()} MB each; any common audio format.")
    # The metadata stays for the next batch (often the same agent or person); only the chosen
    # files are cleared, by giving the uploader a new key.
    n = st.session_state.setdefault("up_batch", 0)
    # No st.form: choosing "Other…" must show its text box at once, which a form would hold
    # back until submitted.
    files = st.file_uploader("Recordings", accept_multiple_files=True, key=f"up_files_{n}",
                             max_upload_size=limit_mb())
    meta = metadata_form()
    submitted = st.button("Queue for analysis", type="primary", key="up_submit")
    if submitted:
        if files:
            st.session_state[FLASH_KEY] = save_uploads(files, meta, box)
            st.session_state["up_batch"] = n + 1
            st.rerun()  # draws the uploader afresh, empty; the metadata stays
        else:
            st.warning("Choose at least one file first.")
    for kind, text in st.session_state.pop(FLASH_KEY, []):
        getattr(st, kind)(text)
    st.subheader("Jobs")
    status_panel(box)


with ui.guard():
    main()
