"""The API over the store with authentication on: API keys and OIDC bearer tokens, every
endpoint through the caller's scope, the audit first, uploads and stored streams as jobs the
worker stores."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from api.app import create_app
from api.auth import Gate, Unauthenticated
from api.references import read as read_reference
from api.security import check_bind
from api.settings import Settings
from cli.main import app as cli
from core.guard import apikeys
from core.storage import audit
from core.storage.audit import AuditLog
from core.admin.settings import load_settings
from core.storage.store import Store
from tests import scope_fixtures
from tests.audio_gen import silence, speak, write
from tests.serving import LOCAL, WS_LOCAL
from tests.scope_fixtures import ADMIN, SUP_A

REMOTE = ("203.0.113.9", 5000)  # another machine: allowed in, once authentication is on


# -- a stand-in identity provider: its metadata and key set on loopback ----------------------
@pytest.fixture(scope="module")
def idp():
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    hits: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] += 1
            body = {"/.well-known/openid-configuration": {
                "issuer": base, "jwks_uri": f"{base}/jwks"},
                "/jwks": KeySet([key]).as_dict(private=False)}.get(self.path)
            data = json.dumps(body).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def token(signer=key, **claims) -> str:
        now = int(time.time())
        body = {"iss": base, "aud": "emoscope", "sub": "u-1", "iat": now, "exp": now + 300}
        return jwt.encode({"alg": "RS256", "kid": "k1"}, body | claims, signer)

    yield SimpleNamespace(url=base, hits=hits, token=token)
    server.shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory, idp, model):
    """Teams A and B and a diary programme (tests/scope_fixtures), sign-in configured, a key
    per kind of caller, and the API serving another machine."""
    folder = tmp_path_factory.mktemp("site")
    db, teams = scope_fixtures.build(folder)
    config = folder / "emoscope.toml"
    config.write_text(scope_fixtures.CONFIG + f"""
[auth]
client_id = "emoscope"
client_secret = "env:NOT_NEEDED_BY_THE_API"
server_metadata_url = "{idp.url}/.well-known/openid-configuration"
""")
    access = load_settings(config).access
    keys = {name: apikeys.create(db, name, role, teams_, progs, access) for name, role, teams_,
            progs in [("lead-a", "supervisor", ["A"], []), ("lead-b", "supervisor", ["B"], []),
                      ("ana", "analyst", [], ["wellbeing"]), ("boss", "admin", [], [])]}
    settings = Settings(model="tiny-random", device="cpu", db=db, rules=str(config))
    api = create_app(settings)
    with TestClient(api, client=REMOTE, base_url=LOCAL) as client:
        yield SimpleNamespace(client=client, db=db, teams=teams, keys=keys, config=config,
                              app=api)


def bearer(credential: str) -> dict:
    return {"Authorization": f"Bearer {credential}"}


def seg_of(db: Path, sid: str) -> str:
    """The session's first segment whose embedding points somewhere (an all-zero one is like
    nothing, so it has no neighbours)."""
    return Store(db).query("SELECT segment_id FROM segments WHERE session_id = ? AND "
                           "list_max(list_transform(embedding, lambda x: abs(x))) > 0 "
                           "ORDER BY start_s LIMIT 1", [sid]).segment_id[0]


# -- authentication ----------------------------------------------------------------------------
def test_no_bad_or_revoked_credentials_get_401(site, idp):
    c, a = site.client, site.teams["A"][0]
    assert c.get("/v1/health/live").status_code == 200
    for method, path in [("GET", "/v1/sessions"), ("GET", f"/v1/sessions/{a}"),
                         ("GET", f"/v1/sessions/{a}/audio"), ("GET", "/v1/reports"),
                         ("GET", "/v1/jobs/j20260101000000-abcdef12"), ("POST", "/v1/sessions"),
                         ("POST", "/v1/predict"), ("GET", f"/v1/segments/{a}-c0-00000/similar")]:
        r = c.request(method, path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert "credentials required" in r.json()["detail"]
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect(WS_LOCAL + "/v1/stream"):
            pass
    assert refused.value.code == 1008
    forger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    bad = [("emo_not-a-key", "unknown or revoked API key"),
           ("not-a-token", "cannot be verified"),
           (idp.token(signer=forger, groups=["leads-a"]), "cannot be verified"),
           (idp.token(exp=int(time.time()) - 120, groups=["leads-a"]), "expired"),
           (idp.token(aud="another-app", groups=["leads-a"]), "not for this service"),
           (idp.token(iss="http://evil.example", groups=["leads-a"]), "not for this service")]
    for credential, says in bad:
        r = c.get("/v1/sessions", headers=bearer(credential))
        assert r.status_code == 401 and says in r.json()["detail"], (says, r.text)
    assert c.get("/v1/sessions", headers=bearer(idp.token(groups=["leads-a"]))).status_code == 200
    r = c.get("/v1/sessions", headers=bearer(idp.token(email="who@example.com")))
    assert r.status_code == 403 and "no role" in r.json()["detail"]
    assert idp.hits["/jwks"] == 1  # the key set is cached
    # A key revoked while the server runs is refused at the next request.
    temp = apikeys.create(site.db, "temp", "admin")
    assert c.get("/v1/sessions", headers={"X-API-Key": temp}).status_code == 200
    apikeys.revoke(site.db, "temp")
    assert c.get("/v1/sessions", headers={"X-API-Key": temp}).status_code == 401
    # With authentication on, loopback callers need credentials too.
    local = TestClient(site.app, client=("127.0.0.1", 40000), base_url=LOCAL)  # no lifespan
    assert local.get("/v1/sessions").status_code == 401


def test_api_keys_are_kept_as_hashes_only_and_open_the_server(tmp_path):
    db = tmp_path / "emoscope.duckdb"
    assert not Gate(None, db).required
    run = CliRunner().invoke(cli, ["apikey", "create", "--db", str(db), "--name", "crm",
                                   "--role", "supervisor", "--team", "A"])
    assert run.exit_code == 0, run.output
    key = run.stdout.strip().splitlines()[0]
    assert key.startswith("emo_") and len(key) > 40
    stored = apikeys.keys_file(db)
    text = stored.read_text()
    assert key not in text and apikeys.hash_api_key(key) in text
    assert stored.stat().st_mode & 0o777 == 0o600 and stored.parent.stat().st_mode & 0o777 == 0o700
    listed = CliRunner().invoke(cli, ["apikey", "list", "--db", str(db)])
    assert "crm" in listed.stdout and key not in listed.output
    gate = Gate(None, db)
    assert gate.required and gate.viewer(key)[0].scope.teams == {"A"}
    check_bind("0.0.0.0", gate.required)  # a key exists: the API may listen beyond loopback
    assert CliRunner().invoke(cli, ["apikey", "revoke", "crm", "--db", str(db)]).exit_code == 0
    with pytest.raises(Unauthenticated):
        Gate(None, db).viewer(key)
    bad = CliRunner().invoke(cli, ["apikey", "create", "--db", str(db), "--name", "x",
                                   "--role", "supervisor"])
    assert bad.exit_code == 2 and "--team" in bad.output


# -- scope: every endpoint -----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["api_key", "token"])
def test_a_team_a_supervisor_sees_plays_finds_and_exports_nothing_of_team_b(site, idp, how):
    c, teams = site.client, site.teams
    h = bearer(site.keys["lead-a"] if how == "api_key" else idp.token(groups=["leads-a"]))
    a, b = teams["A"][0], teams["B"][0]
    page = c.get("/v1/sessions", headers=h, params={"limit": 2}).json()
    assert page["total"] == len(teams["A"]) and len(page["sessions"]) == 2
    rest = c.get("/v1/sessions", headers=h, params={"offset": page["next_offset"]}).json()
    listed = {s["session_id"] for s in page["sessions"] + rest["sessions"]}
    assert listed == set(teams["A"]) and rest["next_offset"] is None
    assert c.get("/v1/sessions", headers=h, params={"team": "B"}).json()["total"] == 0
    assert c.get("/v1/sessions", headers=h, params={"q": "south"}).json()["total"] == 0

    one = c.get(f"/v1/sessions/{a}", headers=h).json()
    assert one["session"]["team"] == "A" and "source_path" not in one["session"]
    assert one["segments"] and set(one["segments"][0]["scores"]) >= {"angry", "neutral"}
    assert one["curves"][0]["probs"] and one["metrics"] and one["alerts"]
    missing, out = c.get("/v1/sessions/s000000000000000", headers=h), \
        c.get(f"/v1/sessions/{b}", headers=h)
    assert missing.status_code == out.status_code == 404
    assert out.json()["detail"] == missing.json()["detail"].replace("s000000000000000", b)

    audio = c.get(f"/v1/sessions/{a}/audio", headers=h)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert c.get(f"/v1/sessions/{b}/audio", headers=h).status_code == 404

    near = c.get(f"/v1/segments/{seg_of(site.db, a)}/similar", headers=h,
                 params={"k": 50}).json()
    assert near["similar"] and {x["session_id"] for x in near["similar"]} <= set(teams["A"]) - {a}
    assert c.get(f"/v1/segments/{seg_of(site.db, b)}/similar", headers=h).status_code == 404

    r = c.get("/v1/reports", headers=h, params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="sessions_' in r.headers["content-disposition"]
    exported = {row["session_id"] for row in csv.DictReader(io.StringIO(r.text))}
    assert exported == set(teams["A"])
    for params in ({"audience": "team:B"}, {"session": b}, {"audience": "person:c-b1"}):
        assert c.get("/v1/reports", headers=h, params=params).status_code == 404
    pdf = c.get("/v1/reports", headers=h, params={"audience": "team:A"})
    assert pdf.content[:5] == b"%PDF-" and "team-A_" in pdf.headers["content-disposition"]

    # The analyst's key reads the diaries only; the admin's everything.
    ana = c.get("/v1/sessions", headers=bearer(site.keys["ana"])).json()
    assert {s["session_id"] for s in ana["sessions"]} == set(teams["W"])
    boss = c.get("/v1/sessions", headers=bearer(site.keys["boss"])).json()
    assert boss["total"] == sum(len(v) for v in teams.values())


def test_every_act_is_audited_first_and_refused_when_it_cannot_be(site):
    c, a = site.client, site.teams["A"][0]
    h = bearer(site.keys["lead-a"])
    log = AuditLog.beside(site.db)
    before = {r["audit_id"] for r in log.spooled()}
    c.get(f"/v1/sessions/{a}", headers=h)
    c.get(f"/v1/sessions/{a}/audio", headers=h)
    c.get("/v1/reports", headers=h, params={"format": "json"})
    c.get(f"/v1/sessions/{site.teams['B'][0]}", headers=h)  # refused: a denied attempt
    new = [r for r in log.spooled() if r["audit_id"] not in before]
    assert [(r["action"], r["who"]) for r in new] == [
        ("view", "api-key:lead-a"), ("play", "api-key:lead-a"), ("export", "api-key:lead-a"),
        ("denied", "api-key:lead-a")]
    assert new[3]["detail"]["status"] == 404
    assert new[0]["target"] == new[1]["target"] == a
    assert set(new[2]["detail"]["sessions"]) == set(site.teams["A"])
    # No audit, no data: the audit folder replaced by a file.
    folder = log.folder
    aside = folder.with_name("audit-aside")
    folder.rename(aside)
    folder.write_text("not a folder")
    try:
        r = c.get(f"/v1/sessions/{a}", headers=h)
        assert r.status_code == 503 and "audit" in r.json()["detail"]
        assert c.get(f"/v1/sessions/{a}/audio", headers=h).status_code == 503
    finally:
        folder.unlink()
        aside.rename(folder)


# -- uploads and stored streams → jobs → the worker ----------------------------------------------
def test_uploads_and_a_stored_stream_become_sessions_through_the_worker(site, tmp_path):
    c = site.client
    lead_a, lead_b = bearer(site.keys["lead-a"]), bearer(site.keys["lead-b"])
    speech = np.concatenate([speak("My order never arrived."), silence(0.8),
                             speak("I want my money back.")])
    clip = write(tmp_path / "call from crm.wav", speech)

    def upload(headers, **form):
        return c.post("/v1/sessions", headers=headers, data=form,
                      files={"audio": (clip.name, clip.read_bytes(), "audio/wav")})

    assert upload(bearer(site.keys["ana"])).status_code == 403  # analysts do not upload
    assert upload(lead_a, team="B").status_code == 403  # nor a supervisor for another team
    assert upload(lead_a, recorded_at="yesterday").status_code == 422
    r = upload(lead_a, agent_id="a-zoe", customer_id="c-9", recorded_at="2026-11-20T09:30",
               tags="api,refund", roles="customer")
    assert r.status_code == 202, r.text
    up = r.json()
    assert up["status"] == "queued" and r.headers["location"] == f"/v1/jobs/{up['job_id']}"
    assert up["metadata"]["team"] == "A" and up["metadata"]["roles"] == ["customer"]
    assert c.get(f"/v1/jobs/{up['job_id']}", headers=lead_a).json()["status"] == "queued"
    assert c.get(f"/v1/jobs/{up['job_id']}", headers=lead_b).status_code == 404

    pcm = (np.clip(speech[::-1], -1, 1) * 32767).astype("<i2")  # not the uploaded audio
    with c.websocket_connect(WS_LOCAL +
                             "/v1/stream?role=customer&store=true&agent=a-zoe",
                             headers=lead_a) as ws:
        ready = ws.receive_json()
        assert ready.get("store") == {"requested": True, "available": True}, ready
        for i in range(0, pcm.size, 3200):
            ws.send_bytes(pcm[i:i + 3200].tobytes())
        ws.send_text(json.dumps({"type": "end"}))
        while (final := ws.receive_json())["type"] != "final":
            pass
    assert final["store"]["status"] == "queued" and final["store"]["requested"] is True
    live = final["store"]["job_id"]
    assert c.get(f"/v1/jobs/{live}", headers=lead_a).json()["status"] == "queued"
    # The scope's reference for the volatility rule was read for this caller.
    assert SUP_A.scope in site.app.state.references._cache

    run = CliRunner().invoke(cli, ["worker", "--db", str(site.db), "--model", "tiny-random",
                                   "--once", "--settle", "0", "--poll", "0.1"])
    assert run.exit_code == 0, run.output
    done = c.get(f"/v1/jobs/{up['job_id']}", headers=lead_a).json()
    assert done["status"] == "done" and done["session_id"]
    stored = c.get(f"/v1/sessions/{done['session_id']}", headers=lead_a).json()
    meta = stored["session"]
    assert (meta["team"], meta["agent_id"], meta["customer_id"], meta["file_name"]) == \
        ("A", "a-zoe", "c-9", "call from crm.wav")
    assert meta["tags"] == ["api", "refund"] and meta["recorded_at"].startswith("2026-11-20T09:30")
    assert [ch["speaker"] for ch in stored["channels"]] == ["customer"]

    # The stored stream: the worker's session is the live one, segment for segment.
    job = c.get(f"/v1/jobs/{live}", headers=lead_a).json()
    assert job["status"] == "done" and job["error"] is None  # analysed, not a duplicate
    assert job["session_id"] == final["session_id"]
    kept = c.get(f"/v1/sessions/{job['session_id']}", headers=lead_a).json()
    assert kept["session"]["team"] == "A" and kept["session"]["agent_id"] == "a-zoe"
    assert [s["segment_id"] for s in kept["segments"]] == \
        [u["segment_id"] for u in final["utterances"]]
    for s, u in zip(kept["segments"], final["utterances"]):
        assert (s["start_s"], s["end_s"], s["label"]) == (u["start_s"], u["end_s"], u["emotion"])
        assert np.allclose(list(s["scores"].values()), list(u["scores"].values()), atol=2e-4)
    assert c.get(f"/v1/jobs/{live}", headers=lead_b).status_code == 404
    uploads = audit.read(Store(site.db), AuditLog.beside(site.db), ADMIN, action="upload")
    assert {json.loads(d)["job_id"] for d in uploads.detail} >= {up["job_id"], live}
    assert set(uploads.who) == {"api-key:lead-a"}


def test_live_volatility_reference_comes_from_the_viewers_scope(site):
    store = Store(site.db)
    m = store.query("SELECT m.speaker, m.volatility, s.team FROM session_metrics m JOIN "
                    "sessions s USING (session_id) WHERE m.speaker <> 'all' AND "
                    "m.volatility IS NOT NULL AND s.status = 'ok'")
    mine = read_reference(site.db, SUP_A)
    assert sorted(mine["customer"]) == sorted(m[(m.team == "A") & (m.speaker == "customer")]
                                              .volatility)
    assert len(read_reference(site.db, ADMIN)["customer"]) > len(mine["customer"])
    assert read_reference(site.db.with_name("none.duckdb"), ADMIN) == {}


def test_the_settings_file_cannot_hold_api_keys(tmp_path):
    from core.admin.settings import SettingsError
    bad = tmp_path / "emoscope.toml"
    bad.write_text('[[access.api_keys]]\nname = "k"\nsha256 = "' + "0" * 64 + '"\n'
                   'role = "admin"\n')
    with pytest.raises(SettingsError, match="emoscope apikey create"):
        load_settings(bad)


def test_search_finds_a_phrase_only_in_the_callers_sessions_and_audits_it(site):
    c, teams = site.client, site.teams
    got = {}
    for name in ("lead-a", "lead-b"):
        r = c.get("/v1/search", headers=bearer(site.keys[name]),
                  params={"q": '"want a refund"', "role": "customer"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == '"want a refund"' and not body["more"]
        got[name] = {h["session_id"] for h in body["hits"]}
        assert {h["text"] for h in body["hits"]} == {"I want a refund right now"}
    assert got == {"lead-a": set(teams["A"]), "lead-b": set(teams["B"])}
    a = bearer(site.keys["lead-a"])
    # a filter naming another team finds nothing rather than widening the scope
    assert c.get("/v1/search", headers=a, params={"q": "cancel", "team": "B"}).json()["hits"] == []
    hit = c.get("/v1/search", headers=bearer(site.keys["boss"]),
                params={"q": "cancel", "emotion": "angry", "since": "2026-11-01"}).json()["hits"]
    assert {h["session_id"] for h in hit} == set(teams["B"]) and hit[0]["label"] == "angry"
    for params, says in [({"q": "x", "emotion": "furious"}, "emotion"),
                         ({"q": '"" !'}, "at least one word"), ({"q": "x", "since": "soon"},
                                                               "since")]:
        r = c.get("/v1/search", headers=a, params=params)
        assert r.status_code == 422 and says in r.json()["detail"], r.text
    rows = [r for r in AuditLog.beside(site.db).spooled()
            if r["action"] == "search" and r["detail"].get("via") == "api"]
    mine = [r for r in rows if r["detail"]["sessions"]
            and set(r["detail"]["sessions"]) <= set(teams["A"])]
    assert mine and all("refund" not in json.dumps(r) for r in rows)


def test_parameters_are_as_strict_as_the_schema_and_periods_count_from_the_data(site):
    """Unknown parameters are refused (a typo never answers everything); the period words
    are the CLI's; list items say which model analysed them."""
    c, h = site.client, bearer(site.keys["boss"])
    every = c.get("/v1/sessions", headers=h, params={"limit": 500}).json()
    for params in ({"teem": "B"}, {"text": "cancel"}, {"since": "this-week"},
                   {"since": "0000-00-00"}, {"period": "last-year"}):
        r = c.get("/v1/sessions", headers=h, params=params)
        assert r.status_code == 422, (params, r.text)
    assert "'teem'" in c.get("/v1/sessions", headers=h, params={"teem": "B"}).json()["detail"]
    assert c.get("/v1/sessions", headers=h, params={"q": "a"}).status_code == 200
    r = c.get("/v1/reports", headers=h, params={"team": "A"})
    assert r.status_code == 422 and "audience" in r.json()["detail"]

    item = every["sessions"][0]
    assert item["model"] == "tiny-random" and item["trained"] is False
    days = sorted(s["when"][:10] for s in every["sessions"])
    newest = dt.date.fromisoformat(days[-1])
    week = c.get("/v1/sessions", headers=h, params={"period": "latest-week",
                                                    "limit": 500}).json()
    first = (newest - dt.timedelta(days=6)).isoformat()
    assert week["total"] == sum(d >= first for d in days) > 0
    assert c.get("/v1/sessions", headers=h, params={"period": "all"}).json()["total"] \
        == every["total"]
    got = c.get("/v1/reports", headers=h, params={"audience": "team:A", "format": "sessions",
                                                  "period": "latest-month"})
    assert got.status_code == 200
    assert "team-A_latest-month_" in got.headers["content-disposition"]
