"""Search: moments across calls found by what was said (core.index.word_search), with who said it,
how it sounded and when — filtered by role, emotion, team, agent, person, dates and category,
within the
viewer's scope. Each moment plays in place and opens its session at that time; each search
is recorded in the audit (a keyed pseudonym of the query, never its words) before results
show."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.index import word_search as ws
from core.base.keyed import pseudonym, secret
from core.base.labels import LABELS
from dashboard.components import auth, data, nav, player, ui

HELP = ('All the words: `refund double` · a phrase: `"cancel my account"` · either: '
        '`refund OR credit` · a prefix: `charg*` · Chinese: `退款`')


def filters(k) -> tuple[ws.Filters, int]:
    opts = data.summary_options(k)
    c = st.columns([1, 1, 1, 1, 1, 2, 1])
    roles = c[0].multiselect("Speaker role", opts["roles"], key="ws_role")
    emotions = c[1].multiselect("Emotion", LABELS, format_func=ui.label, key="ws_emotion")
    teams = c[2].multiselect("Team", opts["teams"], key="ws_team")
    agent = c[3].selectbox("Agent", ["", *opts["agents"]], key="ws_agent")
    person = c[4].selectbox("Person", ["", *opts["people"]], key="ws_person")
    since = until = None
    if opts["dates"]:
        lo, hi = opts["dates"]
        rng = c[5].date_input("Dates", value=(lo, hi), min_value=lo, max_value=hi,
                              key=f"ws_dates_{lo}_{hi}")
        if isinstance(rng, (tuple, list)) and len(rng) == 2 and tuple(rng) != (lo, hi):
            since = pd.Timestamp(rng[0]).strftime("%Y-%m-%d")
            until = (pd.Timestamp(rng[1]) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    n = c[6].number_input("How many", 5, ws.MAX_LIMIT, 25, step=5, key="ws_n")
    cats = st.multiselect("Category", opts.get("categories", []), key="ws_category")
    return ws.Filters(tuple(roles), tuple(emotions), tuple(teams), agent or None,
                      person or None, since, until, tuple(cats)), int(n)


def audited(q: ws.Query, f: ws.Filters, found: ws.Found) -> bool:
    """Record the search once per browser session and (query, filters); False when the audit
    cannot be written (then nothing is shown)."""
    key = secret(data.db_path())
    # The filters are part of what is recorded once (a person's id among them: keyed too).
    return auth.record_once("search", f"{ws.audit_target(q, key)} {pseudonym(key, repr(f))}",
                            ws.audit_detail(found, f))


def results(k, found: ws.Found) -> None:
    for i, h in enumerate(found.hits.itertuples(index=False)):
        c = st.columns([4, 3, 1])
        how = f"**{ui.label(h.label)}**" if isinstance(h.label, str) else "no emotion"
        when = pd.Timestamp(h.when).strftime("%Y-%m-%d %H:%M") if pd.notna(h.when) else ""
        c[0].markdown(f"“{ui.md(h.text)}”  \n{how} · {ui.md(h.speaker)} · "
                      f"{ui.fmt_time(h.start_s)}–{ui.fmt_time(h.end_s)} · "
                      f"{ui.md(h.file_name)} · {ui.md(h.team or '')} · {when}")
        player.play(k, h.session_id, h.start_s, h.end_s, where=c[1])
        if c[2].button("Open", key=f"ws_open_{i}", help="Open the session at this moment"):
            nav.open_session(h.session_id, float(h.start_s))


def main() -> None:
    if not ui.page("Search"):
        return
    k = data.state()
    text = st.text_input("Words said", key="ws_q", max_chars=ws.MAX_QUERY, help=HELP,
                         placeholder='refund · "cancel my account" · refund OR credit')
    f, n = filters(k)
    if not text.strip():
        st.info(f"Type what was said to find the moments across your calls. {HELP}.")
        return
    try:
        q = ws.parse(text)
        f.check()
        found = data.word_search(k, str(q), f, n)
    except ws.QueryError as e:
        st.error(ui.md(e))
        return
    if found is None:
        st.info("No transcripts are stored yet: ingest with speech-to-text (`--asr`) to "
                "search what was said.")
        return
    if not audited(q, f, found):
        return
    more = " — more match: narrow the search or show more" if found.more else ""
    st.caption(f"{len(found.hits)} moments in {len(found.sessions)} sessions for "
               f"{ui.md(found.query)}, newest first ({1000 * found.seconds:.0f} ms){more}.")
    if found.hits.empty:
        st.info("Nothing you may see matches these words and filters.")
        return
    results(k, found)


with ui.guard():
    main()
