"""Transcripts wherever a session goes out: the CSV and JSON exports (each segment's words), the
PDF (what was said in the worst sessions) and GET /v1/sessions/{id} (lines with their words)."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from core.reporting import report_pdf, reports
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.storage.store import Store


@pytest.fixture(scope="module")
def reader(views_db):
    return Reader(Store(views_db), operator())


def test_exports_carry_what_was_said(reader):
    sid = reader.utterances().session_id.iloc[0]
    lines = reader.transcript(sid)
    segs = reader.export_segments(SessionFilter.of(sid))
    # one utterance per segment in the fixture: each segment's text is its line
    assert segs.sort_values(["start_s", "channel"]).text.tolist() == lines.text.tolist()
    csv = pd.read_csv(io.BytesIO(reports.to_csv(segs)))
    assert "thank you for calling how can i help" in set(csv.text)
    recs = json.loads(reports.to_json(segs))
    assert {r["text"] for r in recs} == set(lines.text)


def test_the_pdf_prints_what_was_said_in_the_worst_sessions(reader, monkeypatch):
    printed = []
    real = report_pdf.Doc.table

    def spy(self, head, rows, widths, size=7):
        if head[-1] == "Said":
            printed.extend(r[-1] for r in rows)
        return real(self, head, rows, widths, size)
    monkeypatch.setattr(report_pdf.Doc, "table", spy)
    out = reports.build(reader, reports.ReportSpec("team", "billing"), formats=("pdf",))
    assert out.files["pdf"][1].startswith(b"%PDF")
    said = set(reader.utterances(SessionFilter(session_ids=out.session_ids)).text)
    assert printed and set(printed) <= said
    assert len({p for p in printed}) > 3


def test_the_api_gives_a_sessions_lines_with_their_words(views_db, model):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    sid = Reader(Store(views_db), operator()).utterances().session_id.iloc[0]
    app = create_app(Settings(model="tiny-random", device="cpu", db=views_db,
                              rules=str(views_db.with_name("emoscope.toml"))))
    from tests.serving import LOCAL
    with TestClient(app, client=("127.0.0.1", 40000), base_url=LOCAL) as c:
        got = c.get(f"/v1/sessions/{sid}", params={"curves": False})
    assert got.status_code == 200, got.text
    lines = got.json()["transcript"]
    first = lines[0]
    assert first["text"] == "thank you for calling how can i help" and first["speaker"] == "agent"
    assert [w["word"] for w in first["words"]] == first["text"].split()
    assert first["label"] and first["asr_model"] == "pocketsphinx:en-us"
    assert got.json()["audio_events"] == []
