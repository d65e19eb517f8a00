"""Every page as a signed-in user (AppTest's st.user): a supervisor of team A sees, plays,
finds and exports nothing of team B; an analyst only their programme; an unauthenticated
browser only the sign-in page; every view, play, export and upload lands in the audit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.storage.store import Store
from tests.scope_fixtures import build

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 40,
        "client_id": "emoscope", "client_secret": "s",
        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}
LEAD_A = {"is_logged_in": True, "email": "lead-a@example.com", "groups": ["leads-a"]}
ANALYST = {"is_logged_in": True, "email": "ana@example.com", "email_verified": True,
           "groups": []}
ADMIN = {"is_logged_in": True, "email": "boss@example.com", "groups": ["emoscope-admins"]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dash-scope"))


@pytest.fixture
def env(store, monkeypatch):
    db, teams = store
    monkeypatch.setenv("EMOSCOPE_DB", str(db))
    monkeypatch.setenv("EMOSCOPE_CONFIG", str(db.parent / "emoscope.toml"))
    return db, teams


def as_user(user: dict | None, page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets["auth"] = AUTH
    if user is not None:
        at.user = dict(user)
    else:
        at.user = {"is_logged_in": False}
    at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def everything_shown(at: AppTest) -> str:
    """All text the page put on screen: markdown, captions, alerts, metrics, tables, widgets."""
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success",
                                  "title", "subheader") for e in getattr(at, kind)]
    parts += [str(m.value) for m in at.metric]
    parts += [df.value.to_csv() for df in at.dataframe]
    parts += [str(w.options) for w in [*at.selectbox, *at.multiselect]]
    return "\n".join(parts).replace("\\", "").replace("\u2060", "")


def spool(db: Path) -> list[dict]:
    f = db.parent / "audit" / "audit.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def session_list(at):
    """The Overview's session list: the table with a session id per row (other tables, such as
    the narrowband/wideband split, may come before it)."""
    return next(d.value for d in at.dataframe if "session_id" in d.value.columns)


def test_an_unauthenticated_browser_sees_only_the_sign_in_page(env):
    db, teams = env
    at = as_user(None, session=teams["A"][0])
    assert [t.value for t in at.title] == ["Emoscope"]
    assert [b.label for b in at.button] == ["Sign in"]
    shown = everything_shown(at)
    for sid in teams["A"] + teams["B"]:
        assert sid not in shown
    assert "A-10.wav" not in shown and not at.dataframe and not at.get("audio")
    with pytest.raises(Exception):  # no other page is registered for this browser
        at.switch_page("views/overview.py").run()


def test_without_sign_in_a_server_open_to_others_shows_nothing(env, monkeypatch):
    from streamlit import config
    config.set_option("server.address", "0.0.0.0")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert any("no sign-in is configured" in e.value for e in at.error)
    assert not at.dataframe and not at.metric
    config.set_option("server.address", "127.0.0.1")
    monkeypatch.setenv("EMOSCOPE_SIGN_IN", "required")  # the launcher asked for sign-in
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert any("settings could not be read" in e.value for e in at.error)
    assert not at.dataframe and not at.metric


def test_an_identity_without_a_grant_sees_nothing(env):
    at = as_user({"is_logged_in": True, "email": "eve@example.com", "groups": ["leads-b"]})
    assert any("grants this identity no role" in w.value for w in at.warning)
    assert not at.dataframe and not at.metric


def test_supervisor_overview_and_alerts_hold_only_team_a(env):
    db, teams = env
    at = as_user(LEAD_A)
    assert next(m.value for m in at.metric if m.label == "Sessions") == str(len(teams["A"]))
    table = session_list(at)
    assert set(table.session_id) == set(teams["A"])
    shown = everything_shown(at)
    assert not any(s in shown for s in teams["B"] + teams["W"]) and "B-13" not in shown
    assert "'B'" not in str([w.options for w in at.multiselect])  # no team B in the filters
    at.switch_page("views/alerts.py").run()
    assert not at.exception
    shown = everything_shown(at)
    assert any(s in shown for s in teams["A"])
    assert not any(s in shown for s in teams["B"] + teams["W"])


def test_supervisor_cannot_open_or_play_a_session_of_team_b(env):
    db, teams = env
    at = as_user(LEAD_A, session=teams["B"][0])
    at.switch_page("views/session.py").run()
    assert not at.exception
    assert any("is available to you" in i.value for i in at.info)
    asked = "\n".join(i.value.replace("\\", "") for i in at.info)
    shown = everything_shown(at).replace(asked, "")  # all but "No session <it> is available"
    assert not any(s in shown for s in teams["B"] + teams["W"])
    assert not any(s in str(at.selectbox[0].options) for s in teams["B"])
    sid = at.session_state["session_id"]
    assert sid in teams["A"]
    audio = at.get("audio")
    assert len(audio) == 1
    acts = spool(db)
    assert {"view", "play"} <= {a["action"] for a in acts if a["target"] == sid}
    assert not any(a["target"] in teams["B"] for a in acts if a["action"] in ("view", "play"))
    assert all(a["who"] == "lead-a@example.com" for a in acts if a["target"] == sid)


def test_supervisor_finds_no_similar_moment_in_team_b(env):
    db, teams = env
    store = Store(db)
    b_seg = store.query("SELECT segment_id FROM segments WHERE session_id = ?",
                        [teams["B"][0]]).segment_id[0]
    at = as_user(LEAD_A, "similar")
    at.number_input(key="sim_k").set_value(50)
    at.checkbox(key="sim_exclude").uncheck().run()
    hits = [m.value for m in at.markdown if " · " in m.value and "`s" in m.value]
    assert hits and all(any(s in h for s in teams["A"]) for h in hits)
    shown = everything_shown(at)
    assert not any(s in shown for s in teams["B"] + teams["W"])
    assert "'B'" not in str([w.options for w in at.multiselect])
    at.text_input(key="sim_segment").input(b_seg).run()
    assert any("among the sessions you may see" in w.value for w in at.warning)
    assert not [m for m in at.metric if m.label == "Similarity"]


def test_supervisor_finds_words_only_in_team_a_and_the_search_is_audited(env):
    db, teams = env
    at = as_user(LEAD_A, "search")
    at.text_input(key="ws_q").input("refund").run()
    said = [m.value for m in at.markdown if "“" in m.value]
    assert said and all("A\\-1" in m for m in said)  # file names A-10.wav ... of team A
    shown = everything_shown(at)
    assert not any(s in shown for s in teams["B"] + teams["W"]) and "B\\-1" not in shown
    assert "'B'" not in str([w.options for w in at.multiselect])
    at.text_input(key="ws_q").input('"cancel my account"').run()  # said in team B only
    assert any("Nothing you may see" in i.value for i in at.info)
    from core.storage.audit import AuditLog
    rows = [r for r in AuditLog.beside(db).spooled()
            if r["action"] == "search" and r["who"] == "lead-a@example.com"]
    assert len(rows) == 2 and set(rows[0]["detail"]["sessions"]) <= set(teams["A"])
    assert not any(w in json.dumps(rows) for w in ("refund", "cancel"))


def test_supervisor_reports_export_only_team_a(env):
    db, teams = env
    at = as_user(LEAD_A, "reports")
    at.button(key="rp_build").click().run()
    assert not at.exception
    report = at.session_state["report_files"]["report"]
    assert set(report.session_ids) == set(teams["A"])
    segments = json.loads(report.files["json"][1])
    assert segments and all(x["session_id"] in teams["A"] for x in segments)
    per_session = report.files["sessions"][1].decode()
    assert not any(s in per_session for s in teams["B"] + teams["W"])
    exports = [a for a in spool(db) if a["action"] == "export"]
    assert exports and set(exports[-1]["detail"]["sessions"]) == set(teams["A"])


def test_supervisor_agents_page_counts_only_team_a_calls(env):
    db, teams = env
    at = as_user(LEAD_A, "agents")
    assert not at.exception
    card = at.dataframe[0].value
    assert int(card.filter(like="alls").iloc[:, 0].sum()) == len(teams["A"])
    shown = everything_shown(at)
    assert any(s in shown for s in teams["A"])
    assert not any(s in shown for s in teams["B"] + teams["W"])
    assert "'B'" not in str([w.options for w in at.selectbox])


def test_supervisor_person_page_shows_only_team_a_entries(env):
    db, teams = env
    at = as_user(LEAD_A, "person")
    assert not at.exception
    people = str([w.options for w in at.selectbox])
    assert "p-001" not in people and "c-b1" not in people  # diaries and team B's customers
    shown = everything_shown(at)
    assert not any(s in shown for s in teams["B"] + teams["W"])


def test_supervisor_uploads_under_their_own_team_and_sees_only_its_jobs(env):
    at = as_user(LEAD_A, "upload")
    assert at.selectbox(key="up_team").options == ["A"]
    with pytest.raises(Exception):  # the admin page is not registered for a supervisor
        at.switch_page("views/admin.py").run()


def test_an_analyst_sees_only_their_programme_and_cannot_upload(env):
    db, teams = env
    at = as_user(ANALYST)
    assert set(session_list(at).session_id) == set(teams["W"])
    with pytest.raises(Exception):
        at.switch_page("views/upload.py").run()


def test_a_sign_in_is_recorded_once_not_at_every_page_load(env):
    """Issue 23 item 7: the dashboard recorded a sign-in at every page load (each one a new
    Streamlit session). Two loads of one sign-in (the same ID-token claims) → one record; a new
    sign-in (a new token) → a second."""
    db, teams = env
    token = {"iss": "https://idp.example", "sub": "u-lead", "iat": 1_800_000_000,
             "nonce": "n-1"}

    def sign_ins() -> int:
        return sum(r["action"] == "sign-in" and r["who"] == "lead-a@example.com"
                   for r in spool(db))
    before = sign_ins()
    as_user(LEAD_A | token)
    as_user(LEAD_A | token, "session")
    assert sign_ins() == before + 1
    as_user(LEAD_A | token | {"iat": 1_800_000_900, "nonce": "n-2"})
    assert sign_ins() == before + 2


def test_admin_sees_the_audit_and_files_an_erasure_request(env):
    db, teams = env
    as_user(LEAD_A, "session")  # something to audit
    at = as_user(ADMIN, "admin")
    rows = at.dataframe[0].value
    assert {"sign-in", "view", "play"} <= set(rows.action)
    assert "lead-a@example.com" in set(rows.who)
    assert "leads-a" in at.dataframe[1].value.to_csv()
    at.selectbox(key="ad_kind").set_value("customer")
    at.text_input(key="ad_value").input("c-a1")
    at.checkbox(key="ad_sure").check()
    at.button(key="ad_go").click().run()
    assert any("Requested" in s.value for s in at.success)
    requests = list((db.parent / "erasures").glob("request-*.json"))
    assert len(requests) == 1 and (requests[0].stat().st_mode & 0o777) == 0o600
    body = json.loads(requests[0].read_text())
    assert body["who"] == "boss@example.com" and body["kind"] == "customer"
    requests[0].unlink()


def test_sigterm_to_the_launcher_stops_its_streamlit_child(tmp_path):
    """Issue 23 item 7: SIGTERM to `emoscope dashboard` left Streamlit serving. The launcher
    runs a stand-in child here (a sleeping Python that writes its pid), not Streamlit: what is
    under test is the launcher's handling of the signal."""
    import os
    import signal
    import subprocess
    import sys
    import time
    pid_file = tmp_path / "child.pid"
    child = ["import os, time", f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))",
             "time.sleep(120)"]
    script = ("import sys; from dashboard import launch; "
              f"launch.run_child([sys.executable, '-c', {'; '.join(child)!r}], None)")
    launcher = subprocess.Popen([sys.executable, "-c", script],
                                cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(15) == 0

    def alive() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
        except OSError:
            return False
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not alive(), "the Streamlit child is still running"
    finally:
        if alive():
            os.kill(pid, signal.SIGKILL)


def test_supervisor_sees_only_team_a_corrections_and_cannot_activate_a_head(env):
    from core.storage import corrections
    db, teams = env
    store = Store(db)
    segs = store.query("SELECT session_id, min(segment_id) AS seg FROM segments "
                       "WHERE list_contains(?, session_id) GROUP BY 1",
                       [[teams["A"][0], teams["B"][0]]])
    for sid, seg in zip(segs.session_id, segs.seg):  # one pending correction in each team
        corrections.put(corrections.spool_dir(db), seg, sid, "sad", f"reviewer-of-{sid}")
    at = as_user(LEAD_A, "calibration")
    assert not at.exception
    shown = everything_shown(at)
    assert f"reviewer-of-{teams['A'][0]}" in shown
    assert not any(s in shown for s in teams["B"] + teams["W"])
    assert next(m.value for m in at.metric if m.label == "Corrected moments") == "1"
    assert not [b for b in at.button if b.key in ("cal_activate", "cal_rollback")]
