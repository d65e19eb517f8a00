"""Calibration: reviewers' corrections so far, the heads trained on them with their
cross-validation against the base model and confusion matrix, and (admins) activating a head or
rolling back. Activation is carried out by the worker, the single writer (core/storage/heads)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.storage import heads as core_heads
from dashboard.components import auth, data, ui


def corrections_so_far(k) -> None:
    rows = data.corrections(k)
    if rows.empty:
        st.info("No corrections yet. Label moments on the Session page (the segment at the "
                "cursor) or on the Similar page (a moment and its most similar ones).")
        return
    latest = rows.sort_values(["created_at", "correction_id"]).drop_duplicates(
        "segment_id", keep="last")
    c = st.columns(3)
    c[0].metric("Corrected moments", f"{len(latest):,}")
    c[1].metric("Reviewers", f"{rows.reviewer.nunique():,}")
    c[2].metric("Waiting to be stored", f"{int(rows.pending.sum()):,}")
    left, right = st.columns(2)
    by_label = latest.groupby("label").size().rename("moments").reset_index() \
        .sort_values("moments", ascending=False)
    left.caption("By label (each moment's newest correction)")
    left.dataframe(by_label, hide_index=True, key="cal_by_label")
    by_reviewer = rows.groupby("reviewer").agg(corrections=("correction_id", "size"),
                                               last=("created_at", "max")).reset_index()
    right.caption("By reviewer")
    right.dataframe(ui.blank(by_reviewer), hide_index=True, key="cal_by_reviewer")


def evaluation(head: pd.Series) -> None:
    import json
    ev = json.loads(head.evaluation) if isinstance(head.evaluation, str) else head.evaluation
    st.caption(f"{ev['folds']}-fold cross-validation on {ev['moments']} corrected moments: "
               f"accuracy **{ev['accuracy']:.0%}** against the base model's "
               f"**{ev['base_accuracy']:.0%}** on the same moments.")
    table = core_heads.evaluation_table(ev)
    pct = st.column_config.NumberColumn(format="percent")
    st.dataframe(table, hide_index=True, key="cal_eval", column_config={
        "precision": pct, "recall": pct, "base recall": pct})
    cm = ev["confusion"]
    st.caption("Confusion matrix (rows: the reviewers' label; columns: the head's, "
               "cross-validated)")
    st.dataframe(pd.DataFrame(cm["matrix"], index=cm["labels"], columns=cm["labels"]),
                 key="cal_confusion")


def admin(k, tags: list[str], active: str | None) -> None:
    st.subheader("Activate or roll back")
    waiting = core_heads.pending_requests(data.db_path())
    if waiting:
        st.info(f"{len(waiting)} request(s) waiting for the worker: "
                + "; ".join("back to the previous" if w.get("previous") else
                            f"activate {w.get('spec') or 'the base model'}" for w in waiting))
    c = st.columns([2, 1, 1])
    chosen = c[0].selectbox("Head", tags, key="cal_activate_pick")
    force = c[1].checkbox("Even if it does not beat the base model", key="cal_force")
    if c[2].button("Activate", key="cal_activate", disabled=chosen == active):
        if auth.record("head", chosen, {"act": "activate", "force": force}):
            core_heads.request(data.db_path(), chosen, auth.current(), force=force)
            st.success(f"Asked the worker to relabel the store with {chosen}.")
    if st.button("Roll back to what was active before", key="cal_rollback",
                 disabled=data.head_activations(k).empty):
        if auth.record("head", "previous", {"act": "rollback"}):
            core_heads.request(data.db_path(), None, auth.current(), previous=True)
            st.success("Asked the worker to roll back.")


def main() -> None:
    if not ui.page("Calibration"):
        return
    k = data.state()
    st.subheader("Corrections so far")
    corrections_so_far(k)
    st.subheader("Heads")
    heads = data.heads(k)
    active = (data.active_head(k) or (None,))[0]
    st.caption(f"Active: **{active or 'the base model (no head)'}**. Train one with "
               "`emoscope head train NAME`; each training is the next version of its name.")
    if heads.empty:
        st.info("No head trained yet.")
        return
    heads = heads.assign(tag=[core_heads.tag(n, v) for n, v in zip(heads.name, heads.version)])
    tag = st.selectbox("Head", list(heads.tag), key="cal_head",
                       index=list(heads.tag).index(active) if active in set(heads.tag) else 0)
    head = heads[heads.tag == tag].iloc[0]
    st.caption(f"{head.classifier} on {head.n_moments} moments of {head.model or 'any model'} "
               f"({', '.join(head.classes)}), trained {head.trained_at:%Y-%m-%d %H:%M} by "
               f"{ui.md(head.trained_by or '-')}")
    evaluation(head)
    if auth.current().is_admin:
        admin(k, list(heads.tag), active)


with ui.guard():
    main()
