"""Person: one person's entries over time (a diary's, or a customer's calls): negative share,
volatility and mix per entry against their own baseline, entries outside it marked, a click
opens the entry; each entry's words beside its voice, with the fused state over time against
the same baseline; notes an analyst attaches to an entry."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.analysis import fusion
from dashboard.components import charts, data, filters, nav, notes, ui

ROLE_NAMES = {"speaker": "diary entries", "customer": "calls as a customer"}
ONE = {"speaker": "diary entry", "customer": "call as a customer"}


def choose_person(ps: pd.DataFrame) -> tuple[str | None, str | None]:
    ps = ps[ps.role.isin(list(ROLE_NAMES))]
    if ps.empty:
        return None, None
    n = ps.groupby(["person", "role"]).session_id.nunique().unstack(fill_value=0)
    people = filters.persons(ps)  # diaries first; the Reports page offers the same list
    wanted = nav.wanted_person()
    pick = st.selectbox(
        "Person", people, index=people.index(wanted) if wanted in people else 0,
        format_func=lambda x: f"{x} · " + ", ".join(
            ui.plural(int(n.loc[x, r]), ONE[r], ROLE_NAMES[r]) for r in n.columns
            if n.loc[x, r] > 0))
    nav.remember_person(pick)
    roles = [r for r in ROLE_NAMES if r in n.columns and n.loc[pick, r] > 0]
    role = roles[0] if len(roles) == 1 else st.radio(
        "Entries", roles, horizontal=True, key="pe_role", format_func=ROLE_NAMES.get)
    return pick, role


def kpis(j: pd.DataFrame, alerts: pd.DataFrame) -> None:
    last = j.iloc[-1]
    c = st.columns(5)
    c[0].metric("Entries", f"{len(j)}")
    c[1].metric("Outside their baseline", f"{int(j.departs.sum())}")
    c[2].metric("Latest entry", last.status)
    by_sev = alerts.severity.value_counts() if len(alerts) else pd.Series(dtype=int)
    c[3].metric("Alerts", f"{len(alerts)}", help="Alerts raised in these entries (as in the "
                "person's report): " + (", ".join(f"{int(by_sev[s])} {s}" for s in
                                                  ("high", "medium", "low") if s in by_sev)
                                        or "none"))
    base = last.get("baseline_neg_share")
    c[4].metric("Usual negative share", "—" if base is None or pd.isna(base)
                else f"{base:.0%} ± {last.baseline_neg_share_sd or 0:.0%}",
                help="Mean ± sd of the entries before the latest one")


def entries(j: pd.DataFrame, note_counts: pd.Series, alerts: pd.DataFrame) -> None:
    n_alerts = alerts.session_id.value_counts() if len(alerts) else pd.Series(dtype=int)
    view = j.assign(notes=j.session_id.map(note_counts).fillna(0).astype(int),
                    alerts=j.session_id.map(n_alerts).fillna(0).astype(int),
                    when=pd.to_datetime(j["when"]),
                    mix_distance=[f"{d:.2f}" if pd.notna(d) else "—" for d in
                                  pd.to_numeric(j.mix_distance, errors="coerce")])
    ev = st.dataframe(
        ui.blank(view[["when", "file_name", "neg_share", "volatility", "mix_distance",
                       "status", "alerts", "notes", "session_id"]]),
        hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
        key="pe_entries", column_config={
            "when": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
            "file_name": "File",
            "neg_share": st.column_config.NumberColumn("Negative", format="percent"),
            "volatility": st.column_config.NumberColumn("Volatility", format="%.3f"),
            "mix_distance": st.column_config.TextColumn("Mix distance"),
            "status": "Against baseline", "alerts": "Alerts", "notes": "Notes",
            "session_id": "Session"})
    rows = ev.selection.rows if ev is not None else []
    if rows:
        nav.open_session(j.iloc[rows[0]].session_id)


def words_and_voice(k, person: str, role: str | None) -> None:
    """Each entry's words beside its voice, and the fused state over time against the
    person's own baseline (core.analysis.aggregates.words_and_voice)."""
    w = data.words_and_voice(k, person, role)
    if w.empty or w.said.isna().all():
        st.caption("No transcripts for these entries: ingest them with speech-to-text "
                   "(`--asr`) to see what was said beside how it sounded.")
        return
    rules = data.rules()
    z = rules.baseline_volatility_z if rules else 2.0
    st.caption("Distress share: the part of each entry spoken in a distress state — voice and "
               "words together negative, negative words in a flat voice (suppressed "
               "distress), or polite words in an angry voice (masked frustration) — each "
               "point coloured by the entry's most frequent fused state. Grey bar: the "
               f"person's baseline before the entry, the mean ± {z:g} sd of their earlier "
               "entries with words; ringed above it. Click an entry to open it.")
    ev = st.plotly_chart(charts.words_and_voice(w, ui.lang()), key=f"pe_words_{person}",
                         on_select="rerun", selection_mode=("points",))
    row = charts.picked_row(ev)
    if row is not None and 0 <= row < len(w):
        nav.open_session(w.iloc[row].session_id)
    view = w.assign(when=pd.to_datetime(w["when"]),
                    voice=w.voice.map(lambda v: ui.label(v) if isinstance(v, str) else ""),
                    fused=w.fused.map(lambda f: fusion.display(f, ui.lang())
                                      if isinstance(f, str) else ""),
                    against=["above baseline" if d else "within baseline" if pd.notna(b)
                             else "no baseline yet" for d, b in zip(w.distress_departs,
                                                                     w.baseline_distress)])
    st.dataframe(
        ui.blank(view[["when", "said", "voice", "words", "fused", "distress", "against"]]),
        hide_index=True, width="stretch", key="pe_words_table", column_config={
            "when": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD"),
            "said": st.column_config.TextColumn("What was said", width="large"),
            "voice": st.column_config.TextColumn("Voice", width="small"),
            "words": st.column_config.NumberColumn("Words", format="%+.2f",
                                                   help="Sentiment, -1 to +1"),
            "fused": st.column_config.TextColumn("Fused", width="small"),
            "distress": st.column_config.NumberColumn("Distress", format="percent"),
            "against": st.column_config.TextColumn("Against baseline", width="small")})


def main() -> None:
    if not ui.page("Person"):
        return
    k = data.state()
    ps = data.person_sessions(k)
    person, role = choose_person(ps) if len(ps) else (None, None)
    if person is None:
        st.info("No person to follow yet: diaries and calls name their person in the "
                "manifest's `customer_id` (or the Upload page's Customer / person field).")
        return
    j = data.journey(k, person, role)
    if j.empty:
        st.info(f"{ui.md(person)} has no analysed entries.")
        return
    alerts = data.alerts(k)
    alerts = alerts[alerts.session_id.isin(j.session_id)] if len(alerts) else alerts
    kpis(j, alerts)
    rules = data.rules()
    z = rules.baseline_volatility_z if rules else 2.0
    mix_limit = rules.baseline_mix_distance if rules else None
    first = (rules.baseline_min_sessions if rules else 2) + 1
    st.caption(f"One point per entry. Grey bar at an entry: the person's baseline before it, "
               f"the mean ± {z:g} sd of their earlier entries (from entry {first} on). "
               "An entry is ringed "
               "when it departs: its negative share or volatility outside the bar, or its "
               f"emotion mix at least {mix_limit or 0.3:g} from the usual mix (dashed line). "
               "Click an entry to open it.")
    ev = st.plotly_chart(charts.journey(j, ui.lang(), mix_limit), key=f"pe_chart_{person}",
                         on_select="rerun", selection_mode=("points",))
    row = charts.picked_row(ev)
    if row is not None and 0 <= row < len(j):
        nav.open_session(j.iloc[row].session_id)
    st.subheader("Words and voice")
    words_and_voice(k, person, role)
    found = notes.for_sessions(k, j.session_id)
    st.subheader("Entries")
    entries(j, found.session_id.value_counts() if len(found) else pd.Series(dtype=int), alerts)
    st.subheader("Notes")
    names = dict(zip(j.session_id, [f"{pd.Timestamp(w):%Y-%m-%d} {f}" for w, f in
                                    zip(j["when"], j.file_name)]))
    ids = j.session_id.tolist()[::-1]  # the latest entry first
    target = st.selectbox("Entry", ids, format_func=names.get, key=f"pe_note_entry_{person}")
    notes.form(target, "person")
    notes.listing(notes.for_sessions(k, j.session_id), names)


with ui.guard():
    main()
