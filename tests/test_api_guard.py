"""The API never opens by accident, answers to loopback names only, refuses other sites' pages,
and audits what it refuses. The app is built without its lifespan (no model is loaded): none
of this needs one."""
from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.settings import Settings
from core.guard import apikeys
from core.storage.audit import AuditLog
from tests import scope_fixtures
from tests.serving import LOCAL, WS_LOCAL

ON_LOOPBACK = ("127.0.0.1", 40100)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard")
    db, teams = scope_fixtures.build(folder)
    return db, folder / "emoscope.toml"


@pytest.fixture(scope="module")
def keys(store):
    db = store[0]
    return {"lead-a": apikeys.create(db, "lead-a", "supervisor", ["A"]),
            "boss": apikeys.create(db, "boss", "admin")}


def app_for(db, config, **kw):
    return create_app(Settings(model="tiny-random", device="cpu", db=db, rules=str(config), **kw))


def test_a_store_that_had_keys_stays_closed_when_they_go(tmp_path, caplog):
    """Issue 23 item 2: revoking the last key, deleting, emptying or corrupting the keys file
    used to turn authentication off (200 with every team to anyone on loopback)."""
    db = tmp_path / "emoscope.duckdb"  # no store needed: the gate answers first
    config = tmp_path / "emoscope.toml"
    config.write_text(scope_fixtures.CONFIG)
    fresh = TestClient(app_for(tmp_path / "never" / "x.duckdb", config), client=ON_LOOPBACK,
                       base_url=LOCAL)
    assert fresh.get("/v1/sessions").status_code == 200  # never configured: open loopback
    key = apikeys.create(db, "only", "admin")
    c = TestClient(app_for(db, config), client=ON_LOOPBACK, base_url=LOCAL)
    assert c.get("/v1/sessions").status_code == 401
    assert c.get("/v1/sessions", headers={"X-API-Key": key}).status_code == 200
    keys = apikeys.keys_file(db)
    good = keys.read_text()

    def closed(why: str):
        r = c.get("/v1/sessions")
        assert r.status_code == 401 and "closed" in r.json()["detail"], (why, r.text)
        assert c.get("/v1/sessions", headers={"X-API-Key": key}).status_code == 401, why
        health = c.get("/v1/health/ready")
        assert health.status_code == 503 and health.json()["status"] == "closed", why
        return health.json()["detail"]

    caplog.set_level(logging.ERROR, logger="api.auth")
    keys.write_text("")  # emptied
    assert "cannot be read" in closed("empty")
    assert any("authentication closed" in r.message for r in caplog.records)
    keys.write_text('{"keys": [{"name": "only"')  # corrupt
    closed("corrupt")
    keys.write_text(good)
    assert c.get("/v1/sessions", headers={"X-API-Key": key}).status_code == 200
    keys.unlink()  # deleted
    assert "--open-loopback" in closed("deleted")
    keys.write_text(good)
    apikeys.revoke(db, "only")  # the last key revoked
    closed("revoked")
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect(WS_LOCAL + "/v1/stream"):
            pass
    assert refused.value.code == 1008
    # A restarted server remembers too, even with the keys file gone.
    keys.unlink()
    again = TestClient(app_for(db, config), client=ON_LOOPBACK, base_url=LOCAL)
    assert again.get("/v1/sessions").status_code == 401
    # Open only when asked for explicitly.
    asked = TestClient(app_for(db, config, open_loopback=True), client=ON_LOOPBACK,
                       base_url=LOCAL)
    assert asked.get("/v1/sessions").status_code == 200


def test_the_api_answers_to_loopback_names_only(store):
    """Issue 23 item 3: DNS rebinding — a page at http://evil.example:PORT resolved to
    127.0.0.1 was served as this machine's operator."""
    db, config = store
    c = TestClient(app_for(db.parent / "open" / "x.duckdb", config), client=ON_LOOPBACK)
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost"):
        assert c.get("/v1/health/live", headers={"host": host}).status_code == 200, host
    for host in ("evil.example:8000", "evil.example", "localhost.evil.example", "0x7f.1",
                 "[::1]x", ""):
        r = c.get("/v1/sessions", headers={"host": host})
        assert r.status_code == 400 and "localhost" in r.json()["detail"], host
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect("ws://evil.example:8000/v1/stream"):
            pass
    assert refused.value.code == 1008


def test_allowed_hosts_count_only_with_authentication(store, tmp_path):
    config = tmp_path / "emoscope.toml"
    config.write_text(scope_fixtures.CONFIG + '\n[server]\nallowed_hosts = ["emo.example.org"]\n')
    db = tmp_path / "x.duckdb"
    c = TestClient(app_for(db, config), client=ON_LOOPBACK, base_url="http://emo.example.org")
    assert c.get("/v1/sessions").status_code == 400  # no authentication: loopback names only
    key = apikeys.create(db, "k", "admin")
    assert c.get("/v1/sessions", headers={"X-API-Key": key}).status_code == 200
    assert c.get("/v1/sessions", headers={"X-API-Key": key, "host": "evil.example"}
                 ).status_code == 400


def test_other_sites_pages_cannot_upload_or_stream(store, tmp_path):
    """Issue 23 item 2: a cross-origin multipart upload got 202 (CSRF)."""
    db = tmp_path / "x.duckdb"
    c = TestClient(app_for(db, store[1]), client=ON_LOOPBACK, base_url=LOCAL)
    form = {"audio": ("call.wav", b"RIFF" + bytes(64), "audio/wav")}
    for origin in ("http://evil.example", "null", "http://localhost.evil.example:8000"):
        r = c.post("/v1/sessions", files=form, headers={"origin": origin})
        assert r.status_code == 403 and "other sites" in r.json()["detail"], origin
    assert not (db.parent / "inbox").exists() or not any((db.parent / "inbox").iterdir())
    with pytest.raises(WebSocketDisconnect):
        with c.websocket_connect(WS_LOCAL + "/v1/stream",
                                 headers={"origin": "http://evil.example"}):
            pass
    r = c.post("/v1/sessions", files=form, headers={"origin": "http://localhost:8501"})
    assert r.status_code == 202, r.text  # the dashboard's own origin, or no browser at all
    assert c.post("/v1/sessions", files=form).status_code == 202


def test_denied_attempts_are_audited(store, keys):
    """Issue 23 item 7: 401, 403 and 404 were never audited."""
    db, config = store
    key = keys["lead-a"]
    c = TestClient(app_for(db, config), client=("203.0.113.4", 5000), base_url=LOCAL)
    log = AuditLog.beside(db)
    before = {r["audit_id"] for r in log.spooled()}
    h = {"X-API-Key": key}
    assert c.get("/v1/sessions").status_code == 401
    assert c.get("/v1/sessions", headers={"X-API-Key": "emo_guess"}).status_code == 401
    assert c.get("/v1/sessions/no-such-session", headers=h).status_code == 404
    assert c.post("/v1/sessions", headers=h, data={"team": "B"},
                  files={"audio": ("x.wav", b"RIFF" + bytes(64), "audio/wav")}
                  ).status_code == 403
    assert c.get("/v1/sessions", headers={"host": "evil.example"}).status_code == 400
    denied = [r for r in log.spooled() if r["audit_id"] not in before]
    assert [(r["action"], r["who"], r["detail"]["status"]) for r in denied] == [
        ("denied", "unauthenticated", 401), ("denied", "unauthenticated", 401),
        ("denied", "api-key:lead-a", 404), ("denied", "api-key:lead-a", 403),
        ("denied", "unauthenticated", 400)]
    assert denied[0]["detail"]["client"] == "203.0.113.4"
    assert "emo_guess" not in str(denied)  # a guessed key is not written down


WAV = {"audio": ("x.wav", b"RIFF" + bytes(64), "audio/wav")}


def test_only_a_programmes_own_people_file_into_its_tag(store, keys):
    """Issue 23 item 7: a supervisor could tag an upload `diary` (here the programme's tag is
    `wellbeing`) and so put it in the wellbeing analysts' scope."""
    db, config = store
    c = TestClient(app_for(db, config), client=ON_LOOPBACK, base_url=LOCAL)
    lead, boss = {"X-API-Key": keys["lead-a"]}, {"X-API-Key": keys["boss"]}
    inbox = db.parent / "inbox"
    before = set(inbox.iterdir()) if inbox.exists() else set()
    r = c.post("/v1/sessions", headers=lead, data={"tags": "north, wellbeing"}, files=WAV)
    assert r.status_code == 403 and "wellbeing" in r.json()["detail"], r.text
    assert (set(inbox.iterdir()) if inbox.exists() else set()) == before
    assert c.post("/v1/sessions", headers=lead, data={"tags": "north"}, files=WAV
                  ).status_code == 202
    assert c.post("/v1/sessions", headers=boss, data={"tags": "wellbeing"}, files=WAV
                  ).status_code == 202


def test_a_copy_of_another_teams_recording_reveals_nothing_of_it(store, keys):
    """Issue 23 item 7: uploading a copy of team B's recording told team A its session id
    ("already stored")."""
    from core.intake.jobs import JobQueue
    from core.storage.store import Store
    db, config = store
    b_session = Store(db).query("SELECT session_id FROM sessions WHERE team = 'B' LIMIT 1"
                                ).session_id[0]
    jobs = JobQueue(Store(db))
    job = jobs.add("copy.wav", "copy.wav", metadata={"team": "A"})
    jobs.done(job, b_session, "already stored (same audio)")  # what the worker records
    c = TestClient(app_for(db, config), client=ON_LOOPBACK, base_url=LOCAL)
    r = c.get(f"/v1/jobs/{job}", headers={"X-API-Key": keys["lead-a"]})
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert r.json()["session_id"] is None and b_session not in r.text
    assert "already" not in r.text
    seen = c.get(f"/v1/jobs/{job}", headers={"X-API-Key": keys["boss"]}).json()
    assert seen["session_id"] == b_session  # an admin sees where it went
