"""Audio of exported sessions as WAV files in one ZIP, optionally with what redaction replaced
in the transcript bleeped out of the sound as well (`emoscope export --clips --bleep`).

The spans come from what is stored: each word the redaction turned into a placeholder
([card], [phone], ...) keeps its time, so the tone covers exactly those words; an utterance
whose text holds a placeholder but whose words carry no times is covered whole. The audio is
read through the viewer's Reader (`audio_path`: the one scope check), decoded at 16 kHz, and
written as 16-bit PCM, one file per session, channels kept.
"""
from __future__ import annotations

import io
import wave
import zipfile

import numpy as np

from core.media.audio import SAMPLE_RATE, AudioError, decode
from core.storage.queries import AudioUnavailable, Reader, SessionFilter
from core.text.redaction import PLACEHOLDERS

TONE_HZ, TONE_LEVEL = 1000.0, 0.25  # the classic bleep, well below full scale

Span = tuple[int, float, float]  # channel, start_s, end_s


def _redacted(text) -> bool:
    return isinstance(text, str) and any(p in text for p in PLACEHOLDERS)


def redacted_spans(reader: Reader, session_id: str) -> list[Span]:
    """(channel, start_s, end_s) of every redacted word of the session, in time order."""
    one = SessionFilter.of(session_id)
    if "utterances" not in reader.tables():
        return []
    utts = reader.utterances(one)
    utts = utts[utts.text.map(_redacted)] if len(utts) else utts
    if utts.empty:
        return []
    words = reader.words(one)
    out: list[Span] = []
    for u in utts.itertuples():
        mine = words[(words.utterance_id == u.utterance_id) & words.word.map(_redacted)]
        timed = mine.dropna(subset=["start_s", "end_s"])
        if len(timed):
            out += [(int(u.channel), float(w.start_s), float(w.end_s)) for w in timed.itertuples()]
        else:  # a placeholder with no word time: the whole utterance
            out.append((int(u.channel), float(u.start_s), float(u.end_s)))
    return sorted(out, key=lambda s: (s[1], s[0]))


def bleep(samples: np.ndarray, spans: list[Span], rate: int = SAMPLE_RATE) -> np.ndarray:
    """A copy of (channels, n) samples with each span replaced by the tone (a span on a
    channel the file does not have covers them all: a mono file of a stereo session)."""
    out = samples.copy()
    for ch, s, e in spans:
        a, b = max(0, int(s * rate)), min(out.shape[1], int(np.ceil(e * rate)))
        if b <= a:
            continue
        tone = TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * np.arange(a, b) / rate)
        rows = [ch] if ch < out.shape[0] else list(range(out.shape[0]))
        out[rows, a:b] = tone.astype(out.dtype)
    return out


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").T.tobytes()  # interleaved
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def clips_zip(reader: Reader, session_ids, with_bleep: bool) -> tuple[bytes, list[str]]:
    """(the ZIP of `<session_id>.wav` files, one line per session left out and why)."""
    buf, missing = io.BytesIO(), []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for sid in session_ids:
            try:
                x = decode(reader.audio_path(sid)).samples
            except (AudioUnavailable, AudioError) as e:
                missing.append(f"{sid}: {e}")
                continue
            if with_bleep:
                x = bleep(x, redacted_spans(reader, sid))
            z.writestr(f"{sid}.wav", wav_bytes(x))
    return buf.getvalue(), missing
