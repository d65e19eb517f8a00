"""Session: metadata, the per-speaker timeline with a seeking audio player, what was said as a
conversation (each line with its emotion, its words' sentiment and the fused state, a click
plays from there), the segment under the cursor, the segment table, trend, volatility, the
categories it meets, alerts and an export of this session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis import fusion, quality
from core.reporting import reports
from core.base.labels import NEGATIVE
from dashboard.components import auth, charts, data, labelling, nav, notes, player, ui

CHART_KEY = "_timeline_n"  # bumped after each click: a fresh chart without a selection
VIEWED_KEY = "_viewed_session"  # the session whose view was last audited


def chosen_session(k) -> str | None:
    ids, text = data.session_choices(k)
    wanted = nav.wanted_session()
    if wanted not in text:
        if wanted:  # unknown, or out of this viewer's scope: the same answer for both
            st.info(f"No session {ui.md(wanted)} is available to you; showing another.")
        wanted = ids[0] if ids else None
    sid = st.selectbox("Session", ids, index=ids.index(wanted) if wanted in text else 0,
                       format_func=text.get)
    nav.remember_session(sid)
    return sid


def timeline_figure(k, sid: str, lang: str, duration_s: float):
    """Built on every run: a figure that came back from st.cache_data (pickled) stopped
    reporting clicks on its segment markers in the browser."""
    return charts.timeline(data.session_frames(k, sid),
                           data.session_segments(k, sid), lang,
                           duration_s=duration_s or None)


def handle_click(sid: str, event) -> None:
    """A click on the timeline (a curve point or a segment) moves the player there.

    The chart is then drawn afresh under a new key, which clears its selection: the next click
    is always a new one, and no point stays highlighted.
    """
    points = list(getattr(getattr(event, "selection", None), "points", None) or [])
    if not points:
        return
    p = points[0]
    t, row = charts.clicked(p)
    seg = data.session_segments(data.state(), sid)
    nav.seek(sid, t, seg.segment_id.iloc[row] if 0 <= row < len(seg) else None)
    st.session_state[CHART_KEY] = st.session_state.get(CHART_KEY, 0) + 1
    st.rerun()


def segment_at(seg: pd.DataFrame, t: float, segment_id: str | None = None) -> pd.Series | None:
    if len(seg) == 0:
        return None
    if segment_id and (seg.segment_id == segment_id).any():
        return seg[seg.segment_id == segment_id].iloc[0]
    # Alerts point at the start of the alerting speaker's segment: that one, even when the
    # other speaker is still talking over it.
    starting = seg[(seg.start_s - t).abs() < 1e-6]
    if len(starting):
        return starting.sort_values("confidence", ascending=False).iloc[0]
    inside = seg[(seg.start_s <= t + 1e-6) & (seg.end_s >= t - 1e-6)]
    if len(inside):
        return inside.sort_values("confidence", ascending=False).iloc[0]
    return seg.iloc[int(np.argmin(np.abs(seg.start_s.to_numpy() - t)))]


def play(k, sid: str, t: float) -> None:
    if player.play(k, sid, t, loud=True):
        # The player seeks to whole seconds only: say so when the moment lies inside one.
        within = f" (the moment is at {ui.fmt_time(t)})" if t - int(t) >= 0.05 else ""
        st.caption(f"Player starts at {ui.fmt_time(int(t))}{within}. "
                   "Click the timeline to move it.")


# Material icons, not emoji: they render without an emoji font (headless Chromium has none).
AVATARS = {"agent": ":material/support_agent:", "customer": ":material/person:",
           "speaker": ":material/record_voice_over:"}
# Streamlit's markdown colours, nearest to each emotion's chart colour.
TINTS = {"angry": "red", "disgusted": "orange", "fearful": "violet", "happy": "green",
         "neutral": "gray", "other": "gray", "sad": "blue", "surprised": "orange",
         "unknown": "gray"}


def line_at(lines: pd.DataFrame, t: float) -> int | None:
    """The line under the cursor: the one being said at `t`, else the last one begun."""
    if lines.empty:
        return None
    inside = lines.index[(lines.start_s <= t + 1e-6) & (lines.end_s >= t - 1e-6)]
    if len(inside):
        return int(inside[0])
    begun = lines.index[lines.start_s <= t + 1e-6]
    return int(begun[-1]) if len(begun) else None


def _badge(label) -> str:
    return f":{TINTS.get(label, 'gray')}[{ui.label(label)}]" if isinstance(label, str) else ""


def _words(v) -> str:
    """The words' sentiment (core/text/sentiment) as a signed figure; "" where there is none."""
    return f" · words {float(v):+.2f}" if isinstance(v, (int, float)) and pd.notna(v) else ""


def transcript(sid: str, lines: pd.DataFrame, events: pd.DataFrame, t: float,
               rules=None) -> None:
    """What was said, as turns: consecutive lines of one speaker under one avatar (the turn's
    fused state above them), each with how it sounded (emotion2vec's label of its segment;
    the speech-to-text model's own emotion beside it when it has one), what the words say,
    the two fused (core/analysis/fusion) and, where they disagree, the suggested response; a time that
    plays from there, the line at the cursor marked."""
    if lines.empty:
        st.caption("No transcript: this session was analysed without speech-to-text "
                   "(ingest with `--asr pocketsphinx` or `--asr sensevoice`).")
        return
    lines = lines.reset_index(drop=True)
    here = line_at(lines, t)
    box = st.container(height=min(480, 90 + 46 * len(lines)), key=f"transcript_{sid}")
    turn, msg = None, None
    for i, u in lines.iterrows():
        if u.speaker != turn:
            turn = u.speaker
            msg = box.chat_message(str(u.speaker), avatar=AVATARS.get(
                u.speaker, ":material/record_voice_over:"))
            if ui.fused(u.get("turn_fused")):
                msg.caption(f"Turn: {ui.fused(u.get('turn_fused'))}")
        c = msg.columns([1, 4], vertical_alignment="center")
        if c[0].button(ui.fmt_time(u.start_s), key=f"line_{sid}_{i}",
                       type="primary" if i == here else "tertiary",
                       help=f"Play from here ({u.speaker})"):
            nav.seek(sid, float(u.start_s))
            st.rerun()
        said = ui.md(u.text)
        said = f":orange-background[{said}]" if i == here else said
        own = u.get("emotion")
        second = f" · _{ui.md(u.asr_model.split(':')[0])}: {ui.label(own)}_" \
            if isinstance(own, str) and own else ""
        fused = u.get("fused")
        c[1].markdown(f"{_badge(u.label)} {said}{second}{_words(u.get('sentiment'))} "
                      f"{ui.fused(fused)}")
        reply = rules.response(fused, ui.lang()) if rules is not None and \
            fused in fusion.DISAGREEMENTS else None
        if reply:  # the disagreements have replies of their own
            c[1].caption(f"Suggested response: “{ui.md(reply)}”")
    if not events.empty:
        st.caption("Also heard: " + ", ".join(
            f"{ui.md(e.event)} at {ui.fmt_time(e.start_s)}" for e in events.itertuples()))
    model = lines.asr_model.dropna()
    if len(model):
        st.caption(f"Transcribed by {ui.md(model.iloc[0])}. Each line: how it sounded, what "
                   "it said, what the words say (sentiment, -1 to +1) and the two together "
                   "(fused state; masked frustration: positive words, angry voice; suppressed "
                   "distress: negative words, flat voice). The line at the player's start is "
                   "highlighted; click a time to play from there.")


def _text(v) -> str:
    return "-" if v is None or (not isinstance(v, str) and pd.isna(v)) or v == "" else str(v)


def header(row: pd.Series, seg: pd.DataFrame, metrics: pd.DataFrame, n_alerts: int) -> None:
    meta = {"File": row.file_name, "When": f"{pd.Timestamp(row['when']):%Y-%m-%d %H:%M}"
            if pd.notna(row["when"]) else "-", "Agent": _text(row.agent_id),
            "Customer / person": _text(row.customer_id), "Team": _text(row.team),
            "Tags": ", ".join(row.tags) or "-", "Session": row.session_id}
    st.caption(" · ".join(f"**{k}** {ui.md(v)}" for k, v in meta.items()))
    for caveat in quality.caveats(row.get("quality_flags")):
        st.warning(caveat, icon="📞")
    talk = float((seg.end_s - seg.start_s).sum()) if len(seg) else 0.0
    neg = float((seg.end_s - seg.start_s)[seg.label.isin(NEGATIVE)].sum()) if len(seg) else 0.0
    vol = metrics[metrics.speaker == "all"].volatility if len(metrics) else pd.Series(dtype=float)
    c = st.columns(5)
    c[0].metric("Duration", ui.fmt_time(row.duration_s or 0))
    c[1].metric("Segments", f"{len(seg)}")
    c[2].metric("Negative share", f"{neg / talk:.0%}" if talk > 0 else "—")
    c[3].metric("Volatility", f"{vol.iloc[0]:.3f}" if len(vol) and pd.notna(vol.iloc[0])
                else "—")
    c[4].metric("Alerts", f"{n_alerts}")


def segment_detail(k, s: pd.Series | None) -> None:
    if s is None:
        st.info("No speech segments in this session.")
        return
    st.markdown(f"**{ui.md(s.speaker)}** · {ui.fmt_time(s.start_s)}–{ui.fmt_time(s.end_s)} · "
                f"**{ui.label(s.label)}** ({s.confidence:.2f})")
    st.plotly_chart(charts.scores_bar(s.scores, ui.lang()), key="seg_scores")
    flags = [f for f in (s["flags"] if s["flags"] is not None else []) if f]
    st.write("Quality flags:", ", ".join(flags) if flags else "none")
    action = s.fallback_action if isinstance(s.fallback_action, str) else None
    st.write("Fallback action:", f"`{action}`" if action else "none (confident)")
    voice = voice_line(s)
    if voice:
        st.write("Voice:", voice)
    st.caption(f"Segment {s.segment_id}")
    if st.button("Find similar moments", key="find_similar"):
        nav.find_similar(s.segment_id)
    if isinstance(s.get("head"), str):
        st.caption(f"Labelled by the head {ui.md(s['head'])} "
                   f"(its own label: {ui.md(s.get('head_label'))}; the model said "
                   f"{ui.md(s.get('base_label'))}).")
    labelling.one(k, s.segment_id, s.session_id, s.label)


def voice_line(s: pd.Series) -> str:
    """How the segment sounded (the prosody analyser), where it was measured."""
    parts = [fmt.format(float(s[c])) for c, fmt in VOICE
             if c in s and s[c] is not None and pd.notna(s[c])]
    return " · ".join(parts)


VOICE = (("pitch_hz", "pitch {:.0f} Hz"), ("loudness_dbfs", "loudness {:.1f} dBFS"),
         ("rate_wps", "{:.1f} words/s"))


def segment_table(sid: str, seg: pd.DataFrame) -> None:
    view = seg.assign(label=seg.label.map(ui.label),
                      flags=[list(f) if f is not None else [] for f in seg["flags"]])
    measured = [c for c, _ in VOICE if c in seg and seg[c].notna().any()]
    cols = ["start_s", "end_s", "speaker", "label", "confidence", "fallback_action", "flags",
            *measured, "segment_id"]
    ev = st.dataframe(ui.blank(view[cols], ["fallback_action"]), hide_index=True,
                      on_select="rerun", width="stretch",
                      selection_mode="single-row", key=f"segtable_{sid}",
                      column_config={"start_s": st.column_config.NumberColumn("Start", format="%.1f"),
                                     "end_s": st.column_config.NumberColumn("End", format="%.1f"),
                                     "confidence": st.column_config.ProgressColumn(
                                         "Confidence", min_value=0.0, max_value=1.0,
                                         format="%.2f"),
                                     "flags": st.column_config.ListColumn("Flags"),
                                     "pitch_hz": st.column_config.NumberColumn(
                                         "Pitch (Hz)", format="%.0f"),
                                     "loudness_dbfs": st.column_config.NumberColumn(
                                         "Loudness (dBFS)", format="%.1f"),
                                     "rate_wps": st.column_config.NumberColumn(
                                         "Words/s", format="%.1f")})
    rows = ev.selection.rows if ev is not None else []
    sig = (sid, tuple(rows))
    if rows and st.session_state.get("_segtable_sig") != sig:
        st.session_state["_segtable_sig"] = sig
        r = seg.iloc[rows[0]]
        nav.seek(sid, r.start_s, r.segment_id)
        st.rerun()


def trend(metrics: pd.DataFrame) -> None:
    m = metrics[metrics.speaker != "all"] if len(metrics) else metrics
    if m.empty:
        st.caption("Trend metrics appear once the analytics have run (`emoscope recompute`).")
        return
    view = m[["speaker", "neg_first", "neg_last", "neg_delta", "trend", "volatility",
              "score_volatility", "talk_s"]]
    st.dataframe(ui.blank(view), hide_index=True, column_config={
        "neg_first": st.column_config.NumberColumn("Negative, first quarter", format="%.2f"),
        "neg_last": st.column_config.NumberColumn("Negative, last quarter", format="%.2f"),
        "neg_delta": st.column_config.NumberColumn("Change", format="%+.2f"),
        "volatility": st.column_config.NumberColumn(format="%.3f"),
        "score_volatility": st.column_config.NumberColumn(format="%.3f"),
        "talk_s": st.column_config.NumberColumn("Talk (s)", format="%.1f")})


def conversation(metrics: pd.DataFrame) -> None:
    """Who talked how much, turns, interruptions and overlap; silence for the whole session."""
    if metrics.empty:
        return
    def shown(values, fmt: str) -> list[str]:  # "—" where a figure does not apply
        return [format(float(v), fmt) if pd.notna(v) else "—" for v in values]
    view = pd.DataFrame({
        "Speaker": metrics.speaker.replace({"all": "whole session"}),
        "Talk (s)": shown(metrics.talk_s, ".1f"), "Turns": shown(metrics.turns, ".0f"),
        "Interruptions": shown(metrics.interruptions, ".0f"),
        "Overlap (s)": shown(metrics.overlap_s, ".1f"),
        "Silence (s)": shown(metrics.silence_s, ".1f"),
        "Longest gap (s)": shown(metrics.longest_silence_s, ".1f")})
    st.dataframe(ui.blank(view), hide_index=True, width="stretch")


def categories(sid: str, cats: pd.DataFrame) -> None:
    """The categories of emoscope.toml this session meets, each with the first utterance that
    met it (those that alert are in the list below, a click away)."""
    if cats.empty:
        return
    st.markdown("**Categories:** " + " · ".join(
        f"{ui.md(c.category)} ({ui.md(c.severity)}; {ui.md(c.speaker)} at "
        f"{ui.fmt_time(c.t_s or 0)}, {ui.plural(int(c.n_utterances), 'utterance')})"
        for c in cats.itertuples(index=False)))


def alerts_list(sid: str, al: pd.DataFrame, rule_set: str | None) -> None:
    if al.empty:
        st.caption("No alerts for this session.")
        return
    if rule_set:
        st.caption(f"Judged by the `{rule_set}` rules of emoscope.toml.")
    for i, a in enumerate(al.itertuples(index=False)):
        c = st.columns([1, 6])
        if c[0].button(ui.fmt_time(a.t_s or 0), key=f"alert_{sid}_{i}",
                       help="Move the player to this moment"):
            nav.seek(sid, a.t_s or 0.0)
            st.rerun()
        c[1].markdown(f"**{ui.md(a.severity)}** · {ui.md(a.speaker)} · {ui.md(a.rule)} — "
                      f"{ui.md(a.detail)}")
        said = ui.response(a.suggested_response, a.suggested_response_zh)
        if said:
            c[1].caption(f"Suggested response: “{ui.md(said)}”")


def export(k, sid: str, row: pd.Series) -> None:
    """Built when clicked (on a thread of its own), not on every rerun of the page; audited
    then, and nothing is built when the audit cannot be written."""
    log, viewer = auth.log(), k.viewer

    def files(fmt):
        def build() -> bytes:
            log.record(viewer, "export", sid, {"formats": [fmt], "sessions": [sid]})
            return getattr(reports, f"to_{fmt}")(data.export_segments(k, sid))
        return build
    base = Path(str(row.file_name)).stem or sid
    c = st.columns(3)
    c[0].download_button("Segments (CSV)", files("csv"), f"{base}.csv", "text/csv")
    c[1].download_button("Segments (JSON, predict format)", files("json"), f"{base}.json",
                         "application/json")
    c[2].download_button("Embeddings (NPY)", files("npy"), f"{base}.npy",
                         "application/octet-stream")


def main() -> None:
    if not ui.page("Session"):
        return
    k = data.state()
    summary = data.session_summary(k)
    sid = chosen_session(k)
    if sid is None:
        return
    row = summary[summary.session_id == sid].iloc[0]
    if st.session_state.get(VIEWED_KEY) != sid:
        if not auth.record("view", sid):
            return
        st.session_state[VIEWED_KEY] = sid
    if row.status != "ok":
        st.error(f"This recording could not be analysed: {ui.md(row.error)}")
        return
    seg = data.session_segments(k, sid)
    metrics = data.session_metrics(k, sid)
    al = data.alerts(k, sid)
    header(row, seg, metrics, len(al))
    t = nav.seek_time(sid)
    st.subheader("Timeline")
    fig = timeline_figure(k, sid, ui.lang(), float(row.duration_s or 0))
    if t:
        fig.add_vline(x=t, line=dict(color="#222", width=1.5, dash="dot"))
    event = st.plotly_chart(fig, key=f"timeline_{sid}_{st.session_state.get(CHART_KEY, 0)}",
                            on_select="rerun",
                            selection_mode=("points",))
    handle_click(sid, event)
    t = nav.seek_time(sid)
    left, right = st.columns([3, 2])
    with left:
        play(k, sid, t)
        st.subheader("What was said")
        rules = data.rules()
        transcript(sid, data.session_transcript(k, sid), data.session_events(k, sid), t,
                   rules.for_session(row.team, row.tags) if rules is not None else None)
        with st.expander("Segments (table)"):
            segment_table(sid, seg)
    with right:
        st.subheader("At the cursor")
        segment_detail(k, segment_at(seg, t, nav.seek_segment(sid)))
    st.subheader("First vs last quarter, per speaker")
    trend(metrics)
    st.subheader("Volatility")
    if "rolling_volatility" in seg and seg.rolling_volatility.notna().any():
        st.plotly_chart(charts.volatility_curve(seg), key="vol_curve")
    else:
        st.caption("Not enough segments per speaker for a volatility curve.")
    st.subheader("Conversation")
    conversation(metrics)
    st.subheader("Alerts")
    categories(sid, data.session_categories(k, sid))
    sets = metrics.rule_set.dropna() if "rule_set" in metrics else pd.Series(dtype=object)
    alerts_list(sid, al, sets.iloc[0] if len(sets) else None)
    st.subheader("Notes")
    notes.listing(notes.for_sessions(k, [sid]))
    notes.form(sid, "session")
    if isinstance(row.customer_id, str) and row.customer_id:
        if st.button(f"Follow {row.customer_id} over time", key="follow_person"):
            nav.open_person(row.customer_id)
    st.subheader("Export this session")
    export(k, sid, row)


with ui.guard():
    main()
