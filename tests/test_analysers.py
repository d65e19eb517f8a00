"""The analyser seam (core/storage/analysers.py): a toy analyser registered in one module with one
migration (tests/loudness_analyser.py) has its values stored by ingest, served by
GET /v1/sessions/{id} and sent by the live stream (the Ray path: tests/test_ray.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from core.storage import analysers
from core.guard.access import operator
from core.storage.queries import Reader
from core.storage.store import Store
from tests.audio_gen import silence, speak
from tests.store_fixtures import writer_for
from tests.serving import LOCAL, WS_LOCAL


@pytest.fixture(scope="module")
def loudness():
    from tests import loudness_analyser
    analysers.register_analyser(loudness_analyser.Loudness)
    yield loudness_analyser
    analysers.unregister("loudness")


@pytest.fixture(scope="module")
def loud_db(loudness, audio_dir, model, tmp_path_factory):
    from ingest.pipeline import ingest_paths
    db = tmp_path_factory.mktemp("loud") / "loud.duckdb"
    report = ingest_paths([audio_dir / "call-001.wav"], writer_for(db), model,
                          executor="serial")
    assert not report.failed, report.failed
    return db


def check_loudness(segments: pd.DataFrame, peaks: pd.DataFrame) -> None:
    """Every segment has its loudness, the dB of the RMS that quality measured on the same
    samples, and one peak row of its own."""
    assert len(segments) and segments.loudness_db.notna().all()
    np.testing.assert_allclose(segments.loudness_db, 20 * np.log10(segments.rms), atol=1e-3)
    assert list(peaks.segment_id) == list(segments.sort_values(["channel", "start_s"])
                                          .segment_id.sort_values())
    assert (peaks.peak > 0).all() and (peaks.end_s > peaks.start_s).all()


def stored(db) -> tuple[pd.DataFrame, pd.DataFrame]:
    r = Reader(Store(db), operator())
    segs, peaks = [], []
    for sid in r.session_rows().session_id:
        segs.append(r.segments(sid))
        peaks.append(r.analysis_rows(sid, "loudness_peaks"))
    return pd.concat(segs), pd.concat(peaks).sort_values("segment_id")


def test_a_registered_analyser_is_stored_by_ingest_and_served_by_the_api(loud_db):
    segs, peaks = stored(loud_db)
    check_loudness(segs, peaks)
    with TestClient(create_app(Settings(db=loud_db, model="tiny-random", device="cpu")),
                    client=("127.0.0.1", 40002), base_url=LOCAL) as c:
        sid = segs.session_id.iloc[0]
        got = c.get(f"/v1/sessions/{sid}", params={"curves": False}).json()
    mine = segs[segs.session_id == sid].sort_values(["start_s", "channel"])
    assert [s["loudness_db"] for s in got["segments"]] == pytest.approx(list(mine.loudness_db))
    assert len(got["analyses"]["loudness_peaks"]) == len(mine)


def test_a_registered_analyser_reaches_the_live_stream(loudness, model, tmp_path):
    pcm = (np.clip(np.concatenate([speak("I need help with my bill."), silence(0.8),
                                   speak("Please fix it now."), silence(0.4)]), -1, 1)
           * 32767).astype("<i2")
    with TestClient(create_app(Settings(model="tiny-random", device="cpu",
                                        db=tmp_path / "emoscope.duckdb")),
                    client=("127.0.0.1", 40003), base_url=LOCAL) as c, \
            c.websocket_connect(f"{WS_LOCAL}/v1/stream?role=customer") as ws:
        ws.receive_json()
        for i in range(0, pcm.size, 8000):
            ws.send_bytes(pcm[i:i + 8000].tobytes())
        ws.send_text(json.dumps({"type": "end"}))
        while (final := ws.receive_json())["type"] != "final":
            pass
    said = final["utterances"]
    assert said and all(isinstance(u["loudness_db"], float) for u in said)
    assert [p["segment_id"] for p in final["analyses"]["loudness_peaks"]] == \
        sorted(u["segment_id"] for u in said)


def test_an_analyser_fills_the_sessions_typed_tables_through_finish(model, speech, tmp_path):
    """A speech-to-text analyser's shape: `analyse` answers per segment (`more`), `finish`
    turns the answers into the session's utterances with their words, the writer stores them
    and Reader.transcript reads them back."""
    from dataclasses import replace

    from core.storage.analysers import Analyser, Found
    from core.base.types import SessionMeta, Utterance, Word, utterance_id_for
    from ingest.options import IngestOptions
    from ingest.pipeline import process_file
    from tests.audio_gen import write

    class Counter(Analyser):
        name = "counter"

        def analyse(self, spans):
            return [Found(more=f"{len(s.wave)} samples") for s in spans]

        @classmethod
        def finish(cls, result, answers):
            said = tuple(
                Utterance(utterance_id_for(result.session_id, seg.channel, n), seg.channel,
                          seg.speaker, seg.start_s, seg.end_s, found.more, "en", 1.0,
                          "counter", words=(Word(found.more.split()[0], seg.start_s,
                                                 seg.end_s),))
                for n, (seg, found) in enumerate(answers))
            return replace(result, utterances=said)

    analysers.register_analyser(Counter)
    try:
        path = write(tmp_path / "a.wav", np.concatenate([speech * 0.5, silence(0.3)]))
        result = process_file(path, SessionMeta(), model, IngestOptions()).result
        writer_for(tmp_path / "t.duckdb").store.migrate()
        writer_for(tmp_path / "t.duckdb").save(result, None)
    finally:
        analysers.unregister("counter")
    assert result.segments and len(result.utterances) == len(result.segments)
    said = Reader(Store(tmp_path / "t.duckdb"), operator()).transcript(result.session_id)
    lengths = [round((s.end_s - s.start_s) * 16_000) for s in result.segments]
    assert [int(t.split()[0]) for t in said.text] == pytest.approx(lengths, abs=2)


def test_emoscope_toml_names_the_analyser_modules_and_their_settings(loudness, tmp_path):
    from core.admin.settings import SettingsError, load_settings
    conf = tmp_path / "emoscope.toml"
    conf.write_text('[analysers]\nmodules = ["tests.loudness_analyser"]\n'
                    '[analysers.loudness]\nfloor_db = -90.0\n')
    try:
        load_settings(conf)
        assert "tests.loudness_analyser" in analysers.modules()
        assert analysers.instance("loudness").config.floor_db == -90.0
        conf.write_text('[analysers.loudness]\nceiling = 1\n')
        load_settings(conf)
        with pytest.raises(ValueError, match=r"\[analysers.loudness\] has unknown setting"):
            analysers.instance("loudness")
    finally:
        analysers.configure({"loudness": {}})
    conf.write_text('[analysers]\nmodules = ["no.such.module"]\n')
    with pytest.raises(SettingsError, match="no.such.module"):
        load_settings(conf)
