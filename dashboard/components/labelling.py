"""A reviewer's label for a moment (core/storage/corrections): one moment on the Session page, a
moment and its most similar ones — each confirmed or skipped — on the Similar page. Labels go
into the corrections spool (the worker stores them); each act is audited first."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.storage import corrections as core_corrections
from core.base.labels import LABELS
from dashboard.components import auth, data, ui


def _save(rows: list[tuple[str, str]], label: str) -> int:
    """(segment id, session id) pairs labelled `label`; how many were saved."""
    if not rows:
        st.info("Nothing to save: every moment was skipped.")
        return 0
    if not auth.record("label", f"{len(rows)} moment{'s' if len(rows) != 1 else ''} as {label}",
                       {"segments": [s for s, _ in rows],
                        "sessions": sorted({x for _, x in rows})}):
        return 0
    who = auth.current().label
    try:
        for seg, sid in rows:
            core_corrections.put(data.corrections_spool(), seg, sid, label, who,
                                 data.settings().labels)
    except core_corrections.CorrectionError as e:
        st.warning(f"Not saved: {e}.")
        return 0
    except OSError as e:
        st.error(f"Not saved: the corrections folder is not writable ({e.strerror}).")
        return 0
    st.success(f"Labelled {len(rows)} moment{'s' if len(rows) != 1 else ''} {label}; a head "
               "learns from them (Calibration page).")
    return len(rows)


def _pick(key: str, current: str | None) -> str:
    choices = data.label_choices()
    return st.selectbox("Label", choices, key=key,
                        index=choices.index(current) if current in choices else 0,
                        format_func=lambda x: ui.label(x) if x in LABELS else x)


def one(k, segment_id: str, session_id: str, current: str | None) -> None:
    """Set this moment's label (Session page, the segment at the cursor)."""
    mine = data.corrections(k, _only(session_id))
    mine = mine[mine.segment_id == segment_id]
    if len(mine):
        last = mine.iloc[-1]
        st.caption(f"Labelled **{ui.md(last.label)}** by {ui.md(last.reviewer)}"
                   + (" (being stored)" if last.pending else ""))
    with st.form(f"label_{segment_id}", clear_on_submit=False):
        label = _pick("label_one", current)
        sent = st.form_submit_button("Save label")
    if sent:
        _save([(segment_id, session_id)], label)


def with_similar(k, segment: dict, hits: pd.DataFrame) -> None:
    """Label a moment and the similar ones found for it in one act, each confirmed or skipped
    (Similar page)."""
    if hits is None or hits.empty:
        return
    table = pd.DataFrame({"confirm": True, "segment_id": hits.segment_id,
                          "session_id": hits.session_id, "label": hits.label,
                          "similarity": hits.similarity.round(3)})
    st.caption("Untick the moments that do not sound the same; the ticked ones and the query "
               "moment get the label.")
    edited = st.data_editor(table, hide_index=True, key="label_similar_table",
                            disabled=["segment_id", "session_id", "label", "similarity"],
                            column_config={"confirm": st.column_config.CheckboxColumn(
                                "Same", help="Ticked: labelled with the query moment")})
    label = _pick("label_similar", segment.get("label"))
    if st.button(f"Label this and the {int(edited.confirm.sum())} confirmed moments",
                 key="label_similar_save"):
        rows = [(segment["segment_id"], segment["session_id"])] + [
            (r.segment_id, r.session_id) for r in edited.itertuples() if r.confirm]
        _save(rows, label)


def _only(session_id: str):
    from core.storage.queries import SessionFilter
    return SessionFilter(session_ids=(session_id,))
