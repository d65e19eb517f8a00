"""Audit & erasure (admins only): who did what, who may see what, and erasure requests that
the worker — the database's one writer — carries out."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core.storage import audit
from core.admin import erasure
from dashboard.components import auth, data, ui


def audit_table() -> None:
    c = st.columns([1, 1, 2])
    since = c[0].date_input("Since", value=dt.date.today() - dt.timedelta(days=7),
                            key="ad_since")
    action = c[1].selectbox("Action", ["all", *audit.ACTIONS], key="ad_action")
    rows = audit.read(data.store(), auth.log(), auth.current(), since,
                      None if action == "all" else action)
    st.caption(f"{len(rows):,} records, newest first (acts not yet folded into the database by "
               "the worker are included).")
    st.dataframe(ui.blank(rows[["at", "who", "roles", "action", "target", "detail"]]),
                 hide_index=True,
                 key="ad_table", column_config={
                     "at": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm:ss")})


def scopes() -> None:
    cfg = data.settings().access
    if not cfg.grants and not cfg.api_keys:
        st.info("No [access] grants in emoscope.toml: without sign-in the dashboard serves this "
                "machine's operator only.")
        return
    rows = [{"group or e-mail": g.group or g.email, "role": g.role,
             "teams": ", ".join(g.teams), "programmes": ", ".join(g.programmes)}
            for g in cfg.grants]
    rows += [{"group or e-mail": f"API key {k.name}", "role": k.role, "teams": ", ".join(k.teams),
              "programmes": ", ".join(k.programmes)} for k in cfg.api_keys]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="ad_grants")
    if cfg.programmes:
        st.caption("Programmes: " + "; ".join(
            f"{ui.md(name)} = {ui.md(s.describe())}" for name, s in cfg.programmes.items()))
    st.caption(f"Identity groups are read from the `{ui.md(cfg.groups_claim)}` claim. Edit the "
               "grants in emoscope.toml; they apply at each user's next page load.")


def erase_form() -> None:
    with st.form("erase", clear_on_submit=True):
        c = st.columns([1, 2])
        kind = c[0].selectbox("Erase", ["session", "customer", "person"], key="ad_kind")
        value = c[1].text_input("Id", key="ad_value", max_chars=200)
        sure = st.checkbox("I understand this removes the recordings, analyses and exports for "
                           "good.", key="ad_sure")
        go = st.form_submit_button("Request erasure", type="primary", key="ad_go")
    if not go:
        return
    if not value.strip() or not sure:
        st.warning("Give an id and tick the box.")
        return
    # The id goes in as a detail the audit keeps only as a pseudonym (core.storage.audit.minimise).
    if not auth.record("erase-request", kind, {"kind": kind, kind: value.strip()}):
        return
    erasure.request(data.db_path(), kind, value.strip(), auth.current())
    st.success("Requested. The worker carries it out within seconds (or run `emoscope forget` "
               "when no worker is running); it then appears in the audit as `erase`.")


def main() -> None:
    st.title("Audit & erasure")
    if not auth.current().is_admin:
        st.error("Only administrators may see the audit.")
        return
    st.subheader("Audit")
    audit_table()
    st.subheader("Who may see what")
    scopes()
    st.subheader("Erase a session, a customer or a person")
    erase_form()


with ui.guard():
    main()
