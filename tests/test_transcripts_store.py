"""Utterances, words and audio events: stored with their session, read through the viewer's
scope, carried by shards, and gone with an erasure."""
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.admin import erasure
from core.intake import shards
from core.guard.access import Scope, Viewer, operator
from core.storage.queries import Reader, SessionFilter
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import AudioEvent, SessionMeta, Utterance, Word, utterance_id_for
from tests.test_store import RULES, make_result


def with_transcript(sha="cd" * 32, team="billing"):
    r = make_result(sha)
    sid = r.session_id
    utts = (
        Utterance(utterance_id_for(sid, 0, 0), 0, "speaker", 0.1, 1.4, "i want a refund",
                  "en", 0.9, "pocketsphinx",
                  words=tuple(Word(w, 0.1 + 0.3 * i, 0.35 + 0.3 * i, 0.8)
                              for i, w in enumerate("i want a refund".split()))),
        Utterance(utterance_id_for(sid, 0, 1), 0, "speaker", 2.1, 3.0, "now", "en", None,
                  "sensevoice", emotion="angry"),
    )
    events = (AudioEvent(0, 4.0, 4.5, "laughter", "sensevoice"),)
    return replace(r, meta=replace(r.meta, team=team), utterances=utts, audio_events=events)


def test_saved_read_scoped_and_erased(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    writer = SessionWriter(store, RULES)
    run = writer.start_run("m", "", False, "cpu", "engine", {}, asr="pocketsphinx")
    r = with_transcript()
    other = with_transcript("ef" * 32, team="sales")
    writer.save_many([r, other], run)
    writer.save(r, run)  # a re-ingest replaces, never duplicates
    assert store.query("SELECT asr FROM runs").asr.tolist() == ["pocketsphinx"]

    reader = Reader(store, operator())
    t = reader.transcript(r.session_id)
    assert t.utterance_id.tolist() == [f"{r.session_id}-c0-u00000", f"{r.session_id}-c0-u00001"]
    assert t.text.tolist() == ["i want a refund", "now"]
    # each line carries the emotion2vec label of the segment it overlaps most
    assert t.label.tolist() == [r.segments[0].label, r.segments[1].label]
    assert t.emotion.tolist()[1] == "angry"
    words = reader.words(SessionFilter.of(r.session_id))
    assert words.word.tolist() == ["i", "want", "a", "refund"] and words.n.tolist() == [0, 1, 2, 3]
    assert reader.audio_events(SessionFilter.of(r.session_id)).event.tolist() == ["laughter"]
    assert reader.counts()["utterances"] == 4

    billing = Reader(store, Viewer("b@x", frozenset({"supervisor"}), Scope(teams=frozenset({"billing"}))))
    assert set(billing.utterances().session_id) == {r.session_id}
    assert billing.transcript(other.session_id).empty
    assert set(billing.words().session_id) == {r.session_id}
    assert set(billing.audio_events().session_id) == {r.session_id}

    erasure.erase(store, "session", r.session_id, operator())
    for table in ("utterances", "words", "audio_events"):
        left = store.query(f"SELECT DISTINCT session_id FROM {table}").session_id.tolist()
        assert left == [other.session_id], table


def test_shard_carries_transcript(tmp_path):
    r = with_transcript()
    shards.write_shard(tmp_path / "st", "k1", r, {"position": 0})
    fs, root = shards.open_folder(tmp_path / "st")
    back = shards.read_whole(fs, root, shards.read_heads(fs, root, ["k1"])[0])
    assert back.utterances == r.utterances and back.audio_events == r.audio_events
    # a later answer for the same file without a transcript leaves none behind
    shards.write_shard(tmp_path / "st", "k1", replace(r, utterances=(), audio_events=()), {})
    back = shards.read_whole(fs, root, shards.read_heads(fs, root, ["k1"])[0])
    assert back.utterances == () and back.audio_events == ()
