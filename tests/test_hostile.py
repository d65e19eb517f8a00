"""Hostile input and a careless setup, probed as issue 13 found them: markdown/HTML injection
through names, agents, tags and errors; recordings world-readable; source paths relative to
wherever ingest ran; one upload limit wherever the app starts; the dashboard listening on
every address; an audit that cannot be written."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from core.guard.access import operator
from core.storage.queries import Reader
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from dashboard.components.ui import md
from tests.scope_fixtures import results
from tests.store_fixtures import RULES

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
EVIL = {"file_name": "[click me](http://evil.example/x) <img src=x onerror=alert(1)>.wav",
        "agent_id": "**boss** ![p](http://evil.example/p.png)",
        "team": "<script>alert(1)</script>", "customer_id": "www.evil.example",
        "tags": ("[t](javascript:alert(1))", ":red[urgent] $x$"),
        "speaker": "<b>agent</b>](http://evil.example)"}
RENDER = MarkdownIt("commonmark", {"html": True})


def inert(text: str) -> bool:
    """Rendered as CommonMark with raw HTML allowed, the text builds no element but <p>/<strong>
    of our own; and nothing in it is a bare URL or address a GFM renderer would link."""
    html = RENDER.render(text)
    plain = html.replace("<p>", "").replace("</p>", "").replace("<strong>", "") \
        .replace("</strong>", "").replace("<code>", "").replace("</code>", "") \
        .replace("<br />", "")
    return "<" not in plain.replace("&lt;", "") and "http://" not in html \
        and "www.evil" not in html


@pytest.mark.parametrize("value", [*EVIL.values(), "a\nb\n# heading", "x@evil.example"])
def test_escaped_user_text_is_inert_and_reads_the_same(value):
    for v in (value if isinstance(value, tuple) else (value,)):
        out = md(v)
        assert inert(out), out
        shown = RENDER.render(out).replace("\u2060", "")
        import html as h
        assert h.unescape(shown.removeprefix("<p>").removesuffix("</p>\n")) == \
            " ".join(v.splitlines())


@pytest.fixture(scope="module")
def evil_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evil")
    db = folder / "emoscope.duckdb"
    store = Store(db)
    store.migrate()
    writer = SessionWriter(store, RULES)
    run = writer.start_run("tiny-random", "", False, "cpu", "engine", {})
    for r in results(folder / "archive")[:2]:
        segs = tuple(dataclasses.replace(s, speaker=EVIL["speaker"]) for s in r.segments)
        writer.save(dataclasses.replace(
            r, file_name=EVIL["file_name"], segments=segs,
            meta=dataclasses.replace(r.meta, agent_id=EVIL["agent_id"], team=EVIL["team"],
                                     customer_id=EVIL["customer_id"], tags=EVIL["tags"])), run)
    return db


@pytest.mark.parametrize("page", ["overview", "session", "alerts", "similar", "reports"])
def test_no_page_renders_user_text_as_markup(evil_db, monkeypatch, page):
    monkeypatch.setenv("EMOSCOPE_DB", str(evil_db))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page != "overview":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    hostile = [t for t in texts if "evil" in t or "script" in t or "boss" in t or "agent" in t]
    if page == "session":
        assert any("click me" in t for t in hostile)  # the file name is shown, as text
    assert all(inert(t) for t in hostile), [t for t in hostile if not inert(t)]
    # Plotly hover text is HTML too: the hostile strings reach charts escaped.
    for chart in at.get("plotly_chart"):
        spec = chart.proto.spec
        assert "<script>" not in spec and "<img" not in spec and "<b>agent" not in spec


def test_files_and_folders_the_product_creates_are_private(tmp_path, speech, monkeypatch,
                                                           model):  # loaded once, shared
    from cli.main import app
    from tests.audio_gen import write
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "call.wav", speech)
    res = CliRunner().invoke(app, ["ingest", "call.wav", "--db", "data/emoscope.duckdb",
                                   "--model", "tiny-random", "--device", "cpu",
                                   "--engine", "reference"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["export", "--db", "data/emoscope.duckdb", "--format", "csv"])
    assert res.exit_code == 0, res.output
    data = tmp_path / "data"
    made = [data, *data.rglob("*")]
    assert {p.name for p in made} >= {"data", "emoscope.duckdb", "exports", "audit"}
    loose = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in made
             if p.stat().st_mode & 0o077}
    assert loose == {}
    # ... and a source path stored absolute, whatever folder ingest ran in.
    stored = Reader(Store(data / "emoscope.duckdb"), operator()).session_rows().source_path[0]
    assert stored == str(tmp_path / "call.wav")
    monkeypatch.chdir("/")
    sid = Reader(Store(data / "emoscope.duckdb"), operator()).session_rows().session_id[0]
    assert Reader(Store(data / "emoscope.duckdb"), operator()).audio_path(sid) == \
        tmp_path / "call.wav"


def test_the_store_tightens_a_database_left_world_readable(tmp_path):
    db = tmp_path / "old.duckdb"
    Store(db).migrate()
    os.chmod(db, 0o644)
    Store(db).migrate()
    assert db.stat().st_mode & 0o777 == 0o600


def test_the_launcher_binds_loopback_and_passes_one_upload_limit(tmp_path, monkeypatch):
    from dashboard.launch import BindRefused, plan
    from core.admin.settings import load_settings
    monkeypatch.chdir(tmp_path)  # not the repository root: no .streamlit/config.toml here
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EMOSCOPE_CONFIG", raising=False)
    monkeypatch.delenv("EMOSCOPE_RULES", raising=False)
    monkeypatch.setenv("EMOSCOPE_UPLOAD_MB", "321")
    cmd, env = plan(tmp_path / "x.duckdb", 8600)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == "321" == env["EMOSCOPE_UPLOAD_MB"]
    assert "EMOSCOPE_SIGN_IN" not in env and "--secrets.files" not in cmd
    with pytest.raises(BindRefused, match="no sign-in is configured"):
        plan(tmp_path / "x.duckdb", 8600, "0.0.0.0")
    with pytest.raises(BindRefused):
        plan(tmp_path / "x.duckdb", 8600, "::")
    # With [auth] in emoscope.toml: Streamlit's secrets generated privately, any address.
    (tmp_path / "emoscope.toml").write_text(
        '[auth]\nclient_id = "emoscope"\nclient_secret = "env:OIDC_SECRET"\n'
        'server_metadata_url = "https://idp.example/.well-known/openid-configuration"\n'
        '[auth.client_kwargs]\nscope = "openid email profile groups"\n')
    monkeypatch.setenv("OIDC_SECRET", "s3cret")
    cmd, env = plan(tmp_path / "x.duckdb", 8600, "0.0.0.0", load_settings())
    secrets = Path(cmd[cmd.index("--secrets.files") + 1])
    assert env["EMOSCOPE_SIGN_IN"] == "required" and cmd[cmd.index("--server.address") + 1] \
        == "0.0.0.0"
    import tomllib
    auth = tomllib.loads(secrets.read_text())["auth"]
    assert auth["client_secret"] == "s3cret" and len(auth["cookie_secret"]) > 40
    assert auth["redirect_uri"] == "http://localhost:8600/oauth2callback"
    assert auth["client_kwargs"] == {"scope": "openid email profile groups"}
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert secrets.parent.stat().st_mode & 0o777 == 0o700
    again, _ = plan(tmp_path / "x.duckdb", 8600, None, load_settings())  # a restart
    assert tomllib.loads(Path(again[again.index("--secrets.files") + 1]).read_text())[
        "auth"]["cookie_secret"] == auth["cookie_secret"]
    monkeypatch.delenv("OIDC_SECRET")
    with pytest.raises(BindRefused, match="OIDC_SECRET"):
        plan(tmp_path / "x.duckdb", 8600, None, load_settings())


def test_the_upload_page_and_server_share_the_limit(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOSCOPE_UPLOAD_MB", "7")
    monkeypatch.setenv("EMOSCOPE_DB", str(tmp_path / "d" / "x.duckdb"))
    at = AppTest.from_file(str(Path(APP).parent / "views" / "upload.py"), default_timeout=60)
    at.run()
    assert any("Up to 7 MB" in c.value for c in at.caption)


def test_an_audit_that_cannot_be_written_stops_play_and_export(evil_db, tmp_path, monkeypatch):
    import shutil
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(evil_db, data / "emoscope.duckdb")
    (data / "audit").write_text("a file where the audit folder should be")
    monkeypatch.setenv("EMOSCOPE_DB", str(data / "emoscope.duckdb"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/session.py").run()
    assert not at.get("audio") and any("Not done" in e.value for e in at.error)
    at.switch_page("views/reports.py").run()
    at.button(key="rp_build").click().run()
    assert "report_files" not in at.session_state or not at.session_state["report_files"]
    assert any("Not done" in e.value for e in at.error)
