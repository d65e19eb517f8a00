"""The HTTP API: /v1/predict, health, loopback-only access, limits and the OpenAPI contract."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.runtime import Runtime, engine_run
from api.batcher import Batcher
from api.security import BindRefused, check_bind
from api.settings import Settings
from core.media.audio import decode
from core.analysis.rules import load_rules
from tests.audio_gen import write
from tests.serving import LOCAL, WS_LOCAL

LOOPBACK = ("127.0.0.1", 40000)
# A store folder of its own (refusals are audited beside it), never the repository's data/.
SCRATCH = Path(tempfile.mkdtemp(prefix="emoscope-api-"))
SETTINGS = Settings(model="tiny-random", device="cpu", max_upload_mb=2.0, max_clip_s=30.0,
                    db=SCRATCH / "emoscope.duckdb")


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(SETTINGS), client=LOOPBACK, base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def clips(tmp_path_factory, speech, call_audio):
    d = tmp_path_factory.mktemp("clips")
    mono = write(d / "mono.wav", speech[:int(3.5 * 16000)])
    return {"mono": mono, "stereo": write(d / "call.wav", call_audio),
            "mp3": write(d / "mono.mp3", speech[:int(3.5 * 16000)], "mp3"),
            "dup": write(d / "dup.wav", np.stack([speech[:16000 * 2]] * 2)),
            "short": write(d / "short.wav", speech[:int(0.2 * 16000)]),
            "long": write(d / "ten-minutes.flac", np.zeros(16000 * 600, np.float32), "flac")}


def post(client, path, name=None, content_type="audio/wav", **params):
    data = path.read_bytes() if hasattr(path, "read_bytes") else path
    return client.post("/v1/predict", params=params,
                       files={"audio": (name or getattr(path, "name", "clip"), data,
                                        content_type)})


def direct(model, path) -> list:
    """What the engine says about each channel of the file, without the API."""
    return engine_run(model, None)(list(decode(path).samples))


def test_predict_mono_is_the_seed_json(client, clips, model):
    r = post(client, clips["mono"])
    assert r.status_code == 200, r.text
    a = r.json()
    assert list(a)[:7] == ["emotion", "confidence", "scores", "fallback_action",
                           "suggested_response", "channel", "speaker"]
    assert a["model"] == "tiny-random" and a["trained"] is False and "channels" not in a
    assert abs(sum(a["scores"].values()) - 1) < 1e-3 and len(a["scores"]) == 9
    ref = direct(model, clips["mono"])[0].scores
    assert np.allclose(list(a["scores"].values()), ref, atol=2e-4)
    assert a["emotion"] == max(a["scores"], key=a["scores"].get)
    rules = load_rules()
    wanted = "unknown" if a["fallback_action"] else a["emotion"]
    assert a["suggested_response"] == rules.response(wanted, "en")
    assert "curve" not in a and "embedding" not in a


def test_predict_frame_embedding_zh(client, clips, model):
    r = post(client, clips["mp3"], granularity="frame", embedding="true", lang="zh")
    assert r.status_code == 200, r.text
    a = r.json()
    probs = np.array(a["curve"]["probs"])
    assert probs.shape == (len(a["curve"]["t_s"]), 9) and abs(len(probs) - 35) <= 1
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    assert len(a["embedding"]) == model.dim
    wanted = "unknown" if a["fallback_action"] else a["emotion"]
    assert a["suggested_response"] == load_rules().responses_zh[wanted]


def test_predict_stereo_answers_per_channel(client, clips, model):
    r = post(client, clips["stereo"])
    assert r.status_code == 200, r.text
    a = r.json()
    assert "emotion" not in a
    assert [c["speaker"] for c in a["channels"]] == ["agent", "customer"]
    for c, ref in zip(a["channels"], direct(model, clips["stereo"])):
        assert np.allclose(list(c["scores"].values()), ref.scores, atol=2e-4)
    named = post(client, clips["stereo"], roles="caller,advisor").json()
    assert [c["speaker"] for c in named["channels"]] == ["caller", "advisor"]
    # The same signal on both channels is one speaker, answered once.
    assert post(client, clips["dup"]).json()["speaker"] == "speaker"


@pytest.mark.parametrize("what, status, says", [
    ("random", 415, "noise.wav: "),
    ("empty", 422, "empty file"),
    ("short", 422, "too short"),
    ("long", 422, "at most 30 s"),
    ("text_part", 415, "not audio"),
    ("raw_body", 415, "multipart/form-data"),
    ("oversize", 413, "limited to 2 MiB"),
    ("oversize_streamed", 413, "goes past that"),
    ("bad_lang", 422, "lang"),
])
def test_bad_input_is_a_clear_4xx_and_the_server_goes_on(client, clips, what, status, says):
    rng = np.random.default_rng(0)
    if what == "random":
        r = post(client, rng.bytes(50_000), name="noise.wav")
    elif what == "empty":
        r = post(client, b"", name="empty.wav")
    elif what == "text_part":
        r = post(client, b"hello", name="notes.txt", content_type="text/plain")
    elif what == "raw_body":
        r = client.post("/v1/predict", content=clips["mono"].read_bytes(),
                        headers={"content-type": "audio/wav"})
    elif what == "oversize":
        r = post(client, rng.bytes(3 * 2**20), name="huge.wav")
    elif what == "oversize_streamed":  # no Content-Length: cut off while it streams in
        head = (b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
                b'Content-Type: audio/wav\r\n\r\n')
        r = client.post("/v1/predict", content=iter([head] + [bytes(2**16)] * 48),
                        headers={"content-type": "multipart/form-data; boundary=b"})
    elif what == "bad_lang":
        r = post(client, clips["mono"], lang="fr")
    else:
        r = post(client, clips[what])
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert says in detail and "\n" not in detail
    assert post(client, clips["mono"]).status_code == 200


def test_hostile_filename_is_not_echoed_raw(client):
    r = post(client, b"\x00" * 1000, name="../../etc/pass\nwd\x1b[31m.wav")
    assert r.status_code == 415
    name = r.json()["detail"].split(": ")[0]
    assert name.endswith("wd[31m.wav") and "/" not in name and name.isprintable()


def test_only_loopback_clients_and_loopback_binding(model):
    with TestClient(create_app(SETTINGS), client=("203.0.113.7", 5000),
                    base_url=LOCAL) as remote:
        assert remote.get("/v1/health/live").status_code == 200
        r = post(remote, b"x", name="a.wav")
        assert r.status_code == 403 and "loopback" in r.json()["detail"]
        with pytest.raises(WebSocketDisconnect) as refused:
            with remote.websocket_connect(WS_LOCAL + "/v1/stream"):
                pass
        assert refused.value.code == 1008
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None)
    with pytest.raises(BindRefused, match="0.0.0.0"):
        check_bind("0.0.0.0", None)


def test_health_and_docs(client):
    assert client.get("/v1/health/live").json() == {"status": "alive"}
    ready = client.get("/v1/health/ready").json()
    assert ready["status"] == "ready" and ready["model"] == "tiny-random"
    assert client.get("/docs").status_code == 200
    paths = client.get("/v1/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/health/live", "/v1/health/ready"} <= set(paths)


def test_full_queue_is_503_with_retry_after(model, clips):
    """One request on the model (held), one waiting (the queue's only place), one too many."""
    gate = threading.Event()
    real = engine_run(model, None)

    def held(waves):
        gate.wait(20)
        return real(waves)

    settings = Settings(model="tiny-random", device="cpu", max_queue=1, max_wait_ms=0,
                        db=SCRATCH / "emoscope.duckdb")
    rules = load_rules()
    from ingest.options import IngestOptions
    rt = Runtime(settings, model, rules, IngestOptions(),
                 Batcher(held, batch_seconds=30, max_wait_ms=0, max_queue=1, timeout_s=30))
    codes = []
    with TestClient(create_app(settings, runtime=rt), client=LOOPBACK,
                    base_url=LOCAL) as c:
        first = threading.Thread(target=lambda: codes.append(post(c, clips["mono"]).status_code))
        first.start()
        while rt.batcher.stats.requests == 0 and rt.batcher._running_s == 0:
            time.sleep(0.01)  # the first is on the model
        second = threading.Thread(target=lambda: codes.append(post(c, clips["mono"]).status_code))
        second.start()
        while rt.batcher.queued < 1:
            time.sleep(0.01)
        r = post(c, clips["mono"])
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "waiting" in r.json()["detail"]
        assert c.get("/v1/health/ready").status_code == 503
        gate.set()
        first.join()
        second.join()
        assert codes == [200, 200]
        assert post(c, clips["mono"]).status_code == 200


# -- the OpenAPI contract: generated requests never get a 5xx ------------------------------
import schemathesis  # noqa: E402  (a test dependency: never skipped)
from hypothesis import HealthCheck, settings as hyp_settings  # noqa: E402


def _as_admin(app, key: str):
    """The generated requests come from schemathesis' in-process client: present them as
    another machine's admin (an API key), so they reach every endpoint and its store; by a
    loopback name (the API answers to no other without [server] allowed_hosts)."""
    auth = (b"authorization", f"Bearer {key}".encode())

    async def wrapped(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = [h for h in scope.get("headers", []) if h[0] not in (b"authorization",
                                                                            b"host")]
            scope = dict(scope, client=("203.0.113.5", 5000),
                         headers=[*headers, auth, (b"host", b"localhost")])
        await app(scope, receive, send)
    return wrapped


def _contract_app():
    """Teams A and B in a store, one admin key, and the app over them (built at collection,
    without starting the app: its lifespan, the model, starts with the first generated
    request). The folder goes when the module's tests are done."""
    from core.guard import apikeys
    from tests import scope_fixtures

    folder = Path(tempfile.mkdtemp(prefix="emoscope-contract-"))
    db, _ = scope_fixtures.build(folder)
    key = apikeys.create(db, "contract", "admin")
    settings = Settings(model="tiny-random", device="cpu", max_upload_mb=2.0, db=db,
                        rules=str(folder / "emoscope.toml"), max_session_mb=2.0)
    return folder, create_app(settings), key


CONTRACT_DIR, _contract, _key = _contract_app()
# A schema cannot say which bytes decode as audio: bytes that do not are refused as an
# unsupported media type (415, documented on the route), not taken for bad parameters.
# Nor can it say which strings parse in the search query language: such a query is 422
# naming what is wrong.
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
CONTRACT_CONFIG = schemathesis.Config.from_dict({"operations": [
    {"include-path": "/v1/predict", "checks": {"positive_data_acceptance": {
        "expected-statuses": [*_ACCEPTED, "415"]}}},
    {"include-path": "/v1/search", "checks": {"positive_data_acceptance": {
        "expected-statuses": [*_ACCEPTED, "422"]}}},
    # A label outside the nine and emoscope.toml's own: the choices change with the settings.
    {"include-path": "/v1/segments/{segment_id}/label", "checks": {
        "positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, "422"]}}}]})
schema = schemathesis.openapi.from_dict(_contract.openapi(), config=CONTRACT_CONFIG)
schema.app = _as_admin(_contract, _key)


@pytest.fixture(scope="module", autouse=True)
def _remove_contract_store():
    yield
    shutil.rmtree(CONTRACT_DIR, ignore_errors=True)
    shutil.rmtree(SCRATCH, ignore_errors=True)


@schema.parametrize()
@hyp_settings(max_examples=4, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
def test_openapi_contract_has_no_server_errors(case):
    # Every check, "schema-valid data is accepted" included: the schema is as strict as the
    # server (days are `format: date`, one audience per report, files not empty).
    case.call_and_validate()


def test_cli_serve_refuses_other_addresses_without_authentication():
    from typer.testing import CliRunner

    from cli.main import app
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--model", "tiny-random"])
    assert res.exit_code == 2 and "refusing to listen on 0.0.0.0" in res.output


def test_cli_serve_on_a_taken_port_fails_before_loading_the_model(monkeypatch):
    import socket

    from typer.testing import CliRunner

    import cli.serve
    from cli.main import app

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the port was checked")
    monkeypatch.setattr(cli.serve, "load_model", no_model)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--port", str(port), "--model", "tiny-random"])
    assert res.exit_code == 2 and f"127.0.0.1:{port}" in res.output
    assert "already in use" in res.output and "--port" in res.output
