"""The narrowband flag (core/analysis/quality, the `bandwidth` analyser): the demo's 8 kHz call and an
upsampled copy of it are telephone-band audio, espeak-ng's 16 kHz speech is not."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.storage.store import Store
from ingest.pipeline import ingest_paths
from tests.audio_gen import write
from tests.store_fixtures import writer_for

CALL01 = Path(__file__).resolve().parent.parent / "data" / "demo" / "call01_billing_double_charge.wav"


@pytest.fixture(scope="module")
def band_db(tmp_path_factory, model, speech) -> Path:
    d = tmp_path_factory.mktemp("band")
    # The first 6 s of the demo's 8 kHz mu-law call, and the same seconds upsampled to 44.1 kHz
    # (what a phone recording looks like once it has passed through a 'wideband' system).
    for name, codec, rate in (("phone.wav", "pcm_mulaw", "8000"), ("upsampled.wav", "pcm_s16le", "44100")):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-t", "6", "-i", str(CALL01), "-c:a", codec,
                        "-ar", rate, str(d / name)], check=True)
    write(d / "wide.wav", speech[: 4 * 16_000])  # 4 s of espeak-ng: wideband speech
    db = tmp_path_factory.mktemp("banddb") / "emoscope.duckdb"
    report = ingest_paths([d], writer_for(db), model)
    assert not report.failed, report.failed
    return db


def test_phone_audio_and_its_upsampled_copy_are_narrowband_and_wideband_speech_is_not(band_db):
    store = Store(band_db)
    ch = store.query("SELECT s.file_name, s.sample_rate, c.channel, c.flags FROM channels c "
                     "JOIN sessions s USING (session_id) ORDER BY 1, 3")
    narrow = {(r.file_name, r.channel): "narrowband" in list(r.flags) for r in ch.itertuples()}
    assert narrow == {("phone.wav", 0): True, ("phone.wav", 1): True,
                      ("upsampled.wav", 0): True, ("upsampled.wav", 1): True,
                      ("wide.wav", 0): False}
    assert dict(zip(ch.file_name, ch.sample_rate))["upsampled.wav"] == 44100  # caught by spectrum
    seg = store.query("SELECT s.file_name, g.flags, g.bandwidth_hz FROM segments g "
                      "JOIN sessions s USING (session_id)")
    for r in seg.itertuples():
        assert ("narrowband" in list(r.flags)) == (r.file_name != "wide.wav")
    by_file = seg.groupby("file_name").bandwidth_hz.median()
    assert by_file["upsampled.wav"] <= 4000 < 6000 <= by_file["wide.wav"]


def test_the_api_says_which_sessions_are_narrowband_and_why_their_labels_deserve_less_trust(
        band_db, model):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from tests.serving import LOCAL

    settings = Settings(model="tiny-random", device="cpu", db=band_db)
    with TestClient(create_app(settings), client=("127.0.0.1", 40000), base_url=LOCAL) as c:
        narrow = c.get("/v1/sessions", params={"band": "narrowband"}).json()["sessions"]
        wide = c.get("/v1/sessions", params={"band": "wideband"}).json()["sessions"]
        assert sorted(s["file_name"] for s in narrow) == ["phone.wav", "upsampled.wav"]
        assert [s["file_name"] for s in wide] == ["wide.wav"]
        assert all("narrowband" in s["flags"] for s in narrow)
        one = c.get(f"/v1/sessions/{narrow[0]['session_id']}", params={"curves": "false"}).json()
        assert any("less reliable" in x and "head" in x for x in one["caveats"])
        assert c.get(f"/v1/sessions/{wide[0]['session_id']}",
                     params={"curves": "false"}).json()["caveats"] == []


def test_the_session_page_and_the_pdf_report_carry_the_caveat(band_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.reporting import reports
    from core.guard.access import operator
    from core.analysis.quality import NARROWBAND_CAVEAT
    from core.storage.queries import Reader
    from tests.test_dashboard import APP

    monkeypatch.setenv("EMOSCOPE_DB", str(band_db))
    r = Reader(Store(band_db), operator())
    rows = r.summary()
    phone = rows[rows.file_name == "phone.wav"].session_id.iloc[0]
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["session_id"] = phone
    at.run()
    bands = next(d.value for d in at.dataframe if "band" in d.value)  # the Overview's split
    assert dict(zip(bands["band"], bands["sessions"])) == {"narrowband": 2, "wideband": 1}
    at.switch_page("views/session.py")
    at.run()
    assert not at.exception
    assert any("less reliable" in w.value for w in at.warning), [w.value for w in at.warning]
    seen = []
    monkeypatch.setattr(reports, "to_pdf", lambda d: seen.append(d) or b"%PDF")
    reports.build(r, reports.ReportSpec(), formats=("pdf",))
    assert seen[0].narrowband == 2 and len(seen[0].sessions) == 3
    assert "less reliable" in NARROWBAND_CAVEAT
