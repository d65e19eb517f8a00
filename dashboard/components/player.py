"""The one audio player every page uses: the recording comes from Reader.audio_path (the
viewer's scope decides), and the act is audited before a byte of audio reaches the browser."""
from __future__ import annotations

import streamlit as st

from core.storage.queries import AudioUnavailable
from dashboard.components import auth, data, nav, ui

# Containers browsers play as they are; anything else is decoded and sent as WAV.
PLAYABLE = {".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".flac", ".webm", ".aac", ".mp4"}


def play(k: data.Key, session_id: str, start_s: float = 0.0, end_s: float | None = None,
         where=st, loud: bool = False) -> bool:
    """Show a player for the session's recording from `start_s` (to `end_s`); False, with a
    one-line reason (a warning when `loud`), when it cannot be played."""
    try:
        path = data.reader(k).audio_path(session_id)
    except AudioUnavailable as e:
        if loud:
            where.warning(f"Cannot play: {ui.md(str(e))}. The analysis below is still complete.")
        else:
            where.caption(f"Recording not available: {ui.md(str(e))}.")
        return False
    if not auth.record_once("play", session_id):
        return False
    kw = {"start_time": int(start_s)}
    if end_s is not None:
        kw["end_time"] = int(end_s + 0.999)
    if path.suffix.lower() in PLAYABLE:
        where.audio(str(path), **kw)
    else:
        from core.media.audio import SAMPLE_RATE, decode
        where.audio(decode(path).samples.mean(axis=0), sample_rate=SAMPLE_RATE, **kw)
    return True


def moment(k: data.Key, m, cols, key: str, note: str) -> None:
    """One moment in a list (a similar one, a pattern's representative): what it sounded like
    and who spoke, `note` under it, its player, and Open for the session at that moment.
    `m` has label, confidence, speaker, start_s, end_s, session_id and segment_id."""
    cols[0].markdown(f"**{ui.label(m.label)}** ({m.confidence:.2f}) · {ui.md(m.speaker)} · "
                     f"{ui.fmt_time(m.start_s)}–{ui.fmt_time(m.end_s)}  \n{note}")
    play(k, m.session_id, m.start_s, m.end_s, where=cols[1])
    if cols[2].button("Open", key=key, help="Open the session at this moment"):
        nav.open_session(m.session_id, float(m.start_s), m.segment_id)
