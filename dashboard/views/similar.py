"""Similar moments: pick a stored segment or upload a clip, get the most similar segments across
the store (cosine over embeddings, through the ANN index beside it: core.index.similar), filtered,
playable and linked to their sessions."""
from __future__ import annotations

import html
import tempfile
import time

import numpy as np
import pandas as pd
import streamlit as st

from core.base.labels import LABELS
from dashboard.components import charts, data, labelling, nav, player, ui


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
    from core.media.audio import SAMPLE_RATE, AudioError, decode
    made_by = data.latest_model(k)
    if made_by is None:
        st.error("No stored session says which model made its embeddings.")
        return None
    name, path = made_by
    from core.intake.inbox import safe_ext
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


def query_vector(k, space) -> tuple[np.ndarray | None, dict | None]:
    """(the clip's vector, None) for an upload, or (None, the stored segment) to search like."""
    how = st.radio("Find moments like", ["a stored segment", "an uploaded clip"],
                   horizontal=True, key="sim_how")
    if how == "an uploaded clip":
        up = st.file_uploader("A short clip (up to a minute)", key="sim_upload",
                              type=["wav", "mp3", "flac", "ogg", "opus", "m4a", "webm", "aac"])
        if up is None:
            st.info("Upload a clip to search with it.")
            return None, None
        return embed_upload(up, k), None
    default = nav.similar_query()
    sid = nav.last_session()
    if not default and sid:
        seg = data.session_segments(k, sid)
        if len(seg):
            default = seg.sort_values("confidence", ascending=False).segment_id.iloc[0]
    if not default:
        # Opened directly: a choice of moments (the most confident of the map's sample), not
        # an id to paste.
        sample = data.similar_map(k, space[0], space[1])[0]
        top = sample.sort_values("confidence", ascending=False, kind="stable").head(30)
        names = dict(zip(top.segment_id, [
            f"{ui.label(r.label)} ({r.confidence:.2f}) · {r.speaker} at "
            f"{ui.fmt_time(r.start_s)} · session {r.session_id}"
            for r in top.itertuples(index=False)]))
        default = st.selectbox("A moment to start from", list(names), format_func=names.get,
                               key="sim_pick") if names else ""
    seg_id = st.text_input("Segment id", value=default or "", key="sim_segment",
                           help="Set by the choice above, by Find similar on a session page "
                                "(the segment at the cursor), or pasted from any export")
    m = data.segment_info(k, seg_id.strip())
    if m is None:
        st.warning(f"No segment {ui.md(seg_id)} among the sessions you may see.")
        return None, None
    st.caption(f"Query: **{ui.label(m['label'])}** ({m['confidence']:.2f}), "
               f"{ui.md(m['speaker'])}, {ui.fmt_time(m['start_s'])}–{ui.fmt_time(m['end_s'])} "
               f"of session {m['session_id']}")
    return None, m


def filters(k) -> dict:
    opts = data.summary_options(k)
    c = st.columns([1, 1, 1, 2, 1, 1])
    speakers = c[0].multiselect("Speaker role", opts["roles"], key="sim_role")
    labels = c[1].multiselect("Label", LABELS, format_func=ui.label, key="sim_label")
    teams = c[2].multiselect("Team", opts["teams"], key="sim_team")
    since = until = None
    if opts["dates"]:
        lo, hi = opts["dates"]
        rng = c[3].date_input("Dates", value=(lo, hi), min_value=lo, max_value=hi,
                              key=f"sim_dates_{lo}_{hi}")
        # The whole range is no filter: the index then answers without an allowed set.
        if isinstance(rng, (tuple, list)) and len(rng) == 2 and tuple(rng) != (lo, hi):
            since = pd.Timestamp(rng[0]).strftime("%Y-%m-%d")
            until = (pd.Timestamp(rng[1]) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    n = c[4].number_input("How many", 1, 50, 10, key="sim_k")
    exclude = c[5].checkbox("Exclude same session", value=True, key="sim_exclude")
    return dict(speakers=tuple(speakers), labels=tuple(labels), teams=tuple(teams),
                since=since, until=until, n=int(n), exclude=exclude)


def results(k, hits: pd.DataFrame, summary: pd.DataFrame) -> None:
    if hits.empty:
        st.info("No segment passes these filters.")
        return
    info = summary.set_index("session_id")
    for i, h in enumerate(hits.itertuples(index=False)):
        c = st.columns([1, 3, 3, 1])
        c[0].metric("Similarity", f"{h.similarity:.3f}")
        player.moment(k, h, c[1:], f"sim_open_{i}",
                      f"{ui.md(info.file_name.get(h.session_id, h.session_id))} · "
                      f"`{h.segment_id}`")

def main() -> None:
    if not ui.page("Similar moments"):
        return
    k = data.state()
    space = data.similar_space(k)
    if space is None:
        st.info("No stored segment has an embedding yet.")
        return
    model, dim, _ = space
    vec, seg = query_vector(k, space)
    f = filters(k)
    hits = None
    t0 = time.perf_counter()
    try:
        if seg is not None:
            found = data.similar(k, seg["segment_id"], f["n"], f["speakers"], f["labels"],
                                 f["teams"], f["since"], f["until"], f["exclude"])
            hits, searched, method = found.hits, found.searched, found.method
        elif vec is not None:
            # The clip was embedded by the newest session's model: search that model's index.
            hits, searched, method = data.similar_to_vector(
                k, data.latest_model(k)[0], int(np.size(vec)), vec, f["n"], f["speakers"], f["labels"], f["teams"],
                f["since"], f["until"])
    except ValueError as e:  # e.g. a clip of another embedding size
        st.error(str(e))
        hits = None
    if hits is not None:
        st.subheader(f"Top {len(hits)}")
        how = {"exact": "scored exactly", "ann": "through the index",
               "ann-filtered": "through the index, filtered"}.get(method, method)
        st.caption(f"Among {searched:,} segments you may see that pass the filters; "
                   f"{how}, {1000 * (time.perf_counter() - t0):.0f} ms.")
        results(k, hits, data.session_summary(k))
    if seg is not None:
        with st.expander("Label this and the 20 most similar moments"):
            near = data.similar(k, seg["segment_id"], 20, f["speakers"], f["labels"],
                                f["teams"], f["since"], f["until"], f["exclude"]).hits
            labelling.with_similar(k, seg, near)
    st.subheader("Map of segment embeddings")
    proj, basis = data.similar_map(k, model, dim)
    marks = []
    if vec is not None:  # the clip: the same unit-length placement as the stored vectors
        v = np.asarray(vec, np.float64)
        marks.append(("query", (v / (np.linalg.norm(v) or 1.0) - basis[0]) @ basis[1].T))
    elif seg is not None:
        marks.append(("query", data.map_places(k, model, dim, basis, [seg["segment_id"]])))
    if hits is not None and len(hits):
        marks.append(("results", data.map_places(k, model, dim, basis, list(hits.segment_id))))
    st.caption(f"PCA of a sample of {len(proj):,} segments, coloured by label; the query is "
               "the black cross, the results the black rings.")
    hover = [html.escape(f"{g} · {sp}") for g, sp in zip(proj.segment_id, proj.speaker)]
    st.plotly_chart(charts.scatter_map(proj[["x", "y"]].to_numpy(), proj.label, hover,
                                       ui.lang(), marks), key="sim_map")


with ui.guard():
    main()
