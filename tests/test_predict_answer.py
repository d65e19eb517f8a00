"""One predict answer (core/analysis/predict_answer): `emoscope predict`, POST /v1/predict and the JSON
export of the stored segment give the same answer for the same clip."""
from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.settings import Settings
from cli.main import app as cli
from core.reporting import reports
from core.guard.access import operator
from core.storage.queries import EVERY, Reader
from core.storage.store import Store
from ingest.options import IngestOptions
from ingest.pipeline import ingest_paths
from tests.audio_gen import write
from tests.serving import LOCAL
from tests.store_fixtures import writer_for

SHARED = ("emotion", "confidence", "scores", "fallback_action", "model", "trained")


def test_cli_api_and_report_records_agree_on_a_clip(tmp_path, speech, model):
    clip = write(tmp_path / "clip.wav", speech)
    r = CliRunner().invoke(cli, ["predict", str(clip), "--model", "tiny-random",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    by_cli = json.loads(r.stdout)

    settings = Settings(model="tiny-random", device="cpu", db=tmp_path / "api.duckdb")
    with TestClient(create_app(settings), client=("127.0.0.1", 40000), base_url=LOCAL) as c:
        res = c.post("/v1/predict", files={"audio": ("clip.wav", clip.read_bytes(),
                                                     "audio/wav")})
    assert res.status_code == 200, res.text
    by_api = res.json()

    db = tmp_path / "emoscope.duckdb"  # the clip stored as one segment, as predict takes it
    done = ingest_paths([clip], writer_for(db), model, IngestOptions(whole_clip=True))
    assert not done.failed, done.failed
    (by_report,) = reports.predict_records(Reader(Store(db), operator()).export_segments(EVERY))

    answers = {"cli": by_cli, "api": by_api, "report": by_report}
    for name, a in answers.items():
        assert set(SHARED) <= set(a), (name, a)
        assert a["model"] == "tiny-random" and a["trained"] is False, name
    for key in ("emotion", "fallback_action", "model", "trained"):
        assert len({json.dumps(a[key]) for a in answers.values()}) == 1, \
            (key, {n: a[key] for n, a in answers.items()})
    # one clip, three paths (the API's batcher pads it among others): the same scores
    ref = np.array(list(by_cli["scores"].values()))
    for name, a in answers.items():
        assert list(a["scores"]) == list(by_cli["scores"]), name
        assert np.allclose(list(a["scores"].values()), ref, atol=2e-4), name
        assert abs(a["confidence"] - by_cli["confidence"]) <= 2e-4, name
