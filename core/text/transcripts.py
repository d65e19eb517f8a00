"""What was said: utterances, their words and the audio events, as the Arrow tables the writer
inserts and Parquet shards carry (the same tables both ways, so a shard read back is the
SessionResult the writer would have stored directly)."""
from __future__ import annotations

import pyarrow as pa

from core.base.types import AudioEvent, SessionResult, Utterance, Word

UTTERANCE_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("session_id", pa.string()), ("channel", pa.int32()),
    ("speaker", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("text", pa.string()), ("language", pa.string()), ("confidence", pa.float64()),
    ("asr_model", pa.string()), ("emotion", pa.string()),
    ("sentiment", pa.float64()), ("sentiment_source", pa.string()),
])
WORD_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("session_id", pa.string()), ("n", pa.int32()),
    ("word", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("confidence", pa.float64()),
])
EVENT_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("channel", pa.int32()), ("start_s", pa.float64()),
    ("end_s", pa.float64()), ("event", pa.string()), ("source", pa.string()),
])


def utterance_table(results: list[SessionResult]) -> pa.Table:
    return pa.Table.from_pylist([
        {"utterance_id": u.utterance_id, "session_id": r.session_id, "channel": u.channel,
         "speaker": u.speaker, "start_s": u.start_s, "end_s": u.end_s, "text": u.text,
         "language": u.language, "confidence": u.confidence, "asr_model": u.asr_model,
         "emotion": u.emotion, "sentiment": u.sentiment,
         "sentiment_source": u.sentiment_source}
        for r in results for u in r.utterances], schema=UTTERANCE_SCHEMA)


def word_table(results: list[SessionResult]) -> pa.Table:
    return pa.Table.from_pylist([
        {"utterance_id": u.utterance_id, "session_id": r.session_id, "n": n, "word": w.word,
         "start_s": w.start_s, "end_s": w.end_s, "confidence": w.confidence}
        for r in results for u in r.utterances for n, w in enumerate(u.words)],
        schema=WORD_SCHEMA)


def event_table(results: list[SessionResult]) -> pa.Table:
    return pa.Table.from_pylist([
        {"session_id": r.session_id, "channel": e.channel, "start_s": e.start_s,
         "end_s": e.end_s, "event": e.event, "source": e.source}
        for r in results for e in r.audio_events], schema=EVENT_SCHEMA)


def utterances_of(utts: pa.Table | None, words: pa.Table | None) -> tuple[Utterance, ...]:
    """Utterances (with their words) from the two tables above, in the order stored."""
    if utts is None or not utts.num_rows:
        return ()
    by_utt: dict[str, list[tuple[int, Word]]] = {}
    for w in (words.to_pylist() if words is not None else []):
        by_utt.setdefault(w["utterance_id"], []).append(
            (w["n"], Word(w["word"], w["start_s"], w["end_s"], w["confidence"])))
    return tuple(
        Utterance(u["utterance_id"], u["channel"], u["speaker"], u["start_s"], u["end_s"],
                  u["text"], u["language"], u["confidence"], u["asr_model"], u["emotion"],
                  tuple(w for _, w in sorted(by_utt.get(u["utterance_id"], []),
                                             key=lambda nw: nw[0])),
                  u.get("sentiment"), u.get("sentiment_source"))  # older shards lack them
        for u in utts.to_pylist())


def events_of(t: pa.Table | None) -> tuple[AudioEvent, ...]:
    if t is None or not t.num_rows:
        return ()
    return tuple(AudioEvent(e["channel"], e["start_s"], e["end_s"], e["event"], e["source"])
                 for e in t.to_pylist())
