"""Similar moments: pick a stored segment or upload a clip, get the most similar segments across
the store (cosine over embeddings), filtered, playable and linked to their sessions."""
from __future__ import annotations

import html
import tempfile

import numpy as np
import pandas as pd
import streamlit as st

from core import search
from core.labels import LABELS
from dashboard.components import charts, data, nav, player, ui


@st.cache_resource(show_spinner="Loading the model…", max_entries=1)
def model(name: str, path: str | None):
    """Loaded on first upload only: the dashboard never imports torch before that."""
    from ingest.model import ModelUnavailable, load
    for candidate in filter(None, (path, name)):
        try:
            return load(candidate, "auto")
        except ModelUnavailable:
            continue
    return None


MAX_CLIP_S = 60


def embed_upload(upload, k) -> np.ndarray | None:
    from core.audio import SAMPLE_RATE, AudioError, decode
    made_by = data.latest_model(k)
    if made_by is None:
        st.error("No stored session says which model made its embeddings.")
        return None
    name, path = made_by
    from core.inbox import safe_ext
    with tempfile.NamedTemporaryFile(suffix=safe_ext(upload.name)) as f:
        f.write(upload.getvalue())
        f.flush()
        try:
            clip = decode(f.name).samples.mean(axis=0)
        except AudioError as e:
            st.error(f"{ui.md(upload.name)}: {ui.md(e)}")
            return None
    if clip.size > MAX_CLIP_S * SAMPLE_RATE:
        st.warning(f"Only the first {MAX_CLIP_S} seconds of the clip are used.")
        clip = clip[:MAX_CLIP_S * SAMPLE_RATE]
    lm = model(name, path)
    if lm is None:
        st.error(f"The model `{name}` that made the stored embeddings cannot be "
                 "loaded here, so an uploaded clip cannot be compared with them.")
        return None
    from ingest.predict import predict_clip
    result, emb = predict_clip(lm, clip)
    st.caption(f"The clip sounds **{ui.label(result['emotion'])}** "
               f"({result['confidence']:.2f}) to `{name}`.")
    return emb


def query_vector(index: search.View, k) -> tuple[np.ndarray | None, str | None, str | None]:
    """(vector, segment id or None, its session id or None)."""
    how = st.radio("Find moments like", ["a stored segment", "an uploaded clip"],
                   horizontal=True, key="sim_how")
    if how == "an uploaded clip":
        up = st.file_uploader("A short clip (up to a minute)", key="sim_upload",
                              type=["wav", "mp3", "flac", "ogg", "opus", "m4a", "webm", "aac"])
        if up is None:
            st.info("Upload a clip to search with it.")
            return None, None, None
        return embed_upload(up, k), None, None
    default = nav.similar_query()
    sid = nav.last_session()
    if not default and sid:
        seg = data.session_segments(k, sid)
        if len(seg):
            default = seg.sort_values("confidence", ascending=False).segment_id.iloc[0]
    if not default and index.size:
        default = index.meta.segment_id.iloc[0]
    seg_id = st.text_input("Segment id", value=default, key="sim_segment",
                           help="From a session page (the segment at the cursor) or any export")
    row = index.row_of(seg_id.strip())
    if row is None:
        st.warning(f"No segment {ui.md(seg_id)} among the sessions you may see.")
        return None, None, None
    m = index.meta.iloc[row]
    st.caption(f"Query: **{ui.label(m.label)}** ({m.confidence:.2f}), {ui.md(m.speaker)}, "
               f"{ui.fmt_time(m.start_s)}–{ui.fmt_time(m.end_s)} of session {m.session_id}")
    return index.vectors[row], m.segment_id, m.session_id


def filters(index: search.View) -> dict:
    meta = index.meta
    c = st.columns([1, 1, 1, 2, 1, 1])
    speakers = c[0].multiselect("Speaker role", sorted(meta.speaker.dropna().unique()),
                                key="sim_role")
    seen = set(meta.label.unique())  # vectorised: 500,000 labels
    present = [x for x in LABELS if x in seen]
    labels = c[1].multiselect("Label", present, format_func=ui.label, key="sim_label")
    teams = c[2].multiselect("Team", sorted(meta.team.dropna().unique()), key="sim_team")
    when = meta["when"].dropna()
    since = until = None
    if len(when):
        lo, hi = when.min().date(), when.max().date()
        rng = c[3].date_input("Dates", value=(lo, hi), min_value=lo, max_value=hi,
                              key=f"sim_dates_{lo}_{hi}")
        if isinstance(rng, (tuple, list)) and len(rng) == 2:
            since, until = pd.Timestamp(rng[0]), pd.Timestamp(rng[1]) + pd.Timedelta(days=1)
    k = c[4].number_input("How many", 1, 50, 10, key="sim_k")
    exclude = c[5].checkbox("Exclude same session", value=True, key="sim_exclude")
    return dict(speakers=speakers, labels=labels, teams=teams, since=since, until=until,
                k=int(k), exclude=exclude)


def results(k, hits: pd.DataFrame, summary: pd.DataFrame) -> None:
    if hits.empty:
        st.info("No segment passes these filters.")
        return
    info = summary.set_index("session_id")
    for i, h in enumerate(hits.itertuples(index=False)):
        c = st.columns([1, 3, 3, 1])
        c[0].metric("Similarity", f"{h.similarity:.3f}")
        c[1].markdown(f"**{ui.label(h.label)}** ({h.confidence:.2f}) · {ui.md(h.speaker)} · "
                      f"{ui.fmt_time(h.start_s)}–{ui.fmt_time(h.end_s)}  \n"
                      f"{ui.md(info.file_name.get(h.session_id, h.session_id))} · "
                      f"`{h.segment_id}`")
        player.play(k, h.session_id, h.start_s, h.end_s, where=c[2])
        if c[3].button("Open", key=f"sim_open_{i}", help="Open the session at this moment"):
            nav.open_session(h.session_id, float(h.start_s), h.segment_id)


@st.cache_data(show_spinner=False, max_entries=2)
def projection(k) -> pd.DataFrame:
    index = data.search_index(k)
    rows, xy = search.pca_2d(index.vectors)
    m = index.meta.iloc[rows]
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": m.label.to_numpy(),
                         "hover": [html.escape(f"{g} · {sp}") for g, sp in
                                   zip(m.segment_id, m.speaker)]})


def main() -> None:
    if not ui.page("Similar moments"):
        return
    k = data.state()
    index = data.search_index(k)
    if index.size == 0:
        st.info("No stored segment has an embedding yet.")
        return
    if index.dropped:
        st.caption(f"{index.dropped} segments from a model with another embedding size are "
                   "left out of the search.")
    vec, seg_id, sid = query_vector(index, k)
    f = filters(index)
    if vec is not None:
        mask = search.mask_for(index, f["speakers"], f["labels"], f["teams"], f["since"],
                               f["until"], exclude_session=sid if f["exclude"] else None,
                               exclude_segment=seg_id)
        try:
            hits = search.top_k(index, vec, f["k"], mask)
        except ValueError as e:
            st.error(str(e))
            hits = None
        if hits is not None:
            st.subheader(f"Top {len(hits)}")
            results(k, hits, data.session_summary(k))
    st.subheader("Map of segment embeddings")
    proj = projection(k)
    st.caption(f"PCA of {len(proj):,} of {index.size:,} segments, coloured by label.")
    st.plotly_chart(charts.scatter_map(proj[["x", "y"]].to_numpy(), proj.label, proj.hover,
                                       ui.lang()), key="sim_map")


with ui.guard():
    main()
