"""One registry of report formats (core.reporting.reports.FORMATS): a format registered in one place is
offered by `emoscope export` and GET /v1/reports with no other edit (the Reports page offers it
too: tests/test_dashboard.py::test_reports_build_every_format, with the same `toy_format`)."""
from __future__ import annotations

import shutil

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.settings import Settings
from cli.main import app as cli
from core.guard.access import operator
from core.storage.queries import EVERY, Reader
from core.storage.store import Store
from tests.serving import LOCAL


def test_a_registered_format_is_offered_by_the_cli_and_the_api(
        toy_format, ingested_db, tmp_path, model):
    db = tmp_path / "emoscope.duckdb"  # its own copy: exports are audited beside the store
    shutil.copy(ingested_db, db)
    segs = Reader(Store(db), operator()).export_segments(EVERY)
    want = "".join(f"{k} {v}\n" for k, v in segs.speaker.value_counts().sort_index().items())
    assert want.count("\n") >= 2  # the call's two speakers and the diary's one

    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["export", "--db", str(db), "--out", str(out),
                                   "--format", "toy"])
    assert res.exit_code == 0, res.output
    (made,) = out.iterdir()
    assert made.name.endswith("_speakers.txt") and made.read_text() == want
    res = CliRunner().invoke(cli, ["export", "--db", str(db), "--out", str(out),
                                   "--format", "tyo"])
    assert res.exit_code == 2 and "toy" in res.output  # a wrong name lists the registered ones

    settings = Settings(model="tiny-random", device="cpu", db=db)
    with TestClient(create_app(settings), client=("127.0.0.1", 40000), base_url=LOCAL) as c:
        r = c.get("/v1/reports", params={"format": "toy"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain") and r.text == want
        assert '_speakers.txt"' in r.headers["content-disposition"]
        assert c.get("/v1/reports", params={"format": "tyo"}).status_code == 422

