"""Sign-in in headless Chromium through a real OpenID Connect provider on loopback
(oidc-provider-mock): `emoscope dashboard` started as a call centre would start it (sign-in
from emoscope.toml, another working folder), a supervisor and an analyst each see only their
scope, and an unauthenticated browser sees only the sign-in page."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from core.storage.store import Store
from tests.scope_fixtures import CONFIG, build
from tests.serving import wait_healthy
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, settle

ROOT = Path(__file__).resolve().parent.parent


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp{,6})."""
    out = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                out.add(addr)
    return out


def start(db: Path, port: int, cwd: Path, host: str | None = None) -> subprocess.Popen:
    from dashboard.launch import plan
    cmd, env = plan(db, port, host)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(cmd + ["--server.fileWatcherType", "none"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return wait_healthy(proc, f"http://127.0.0.1:{port}/_stcore/health")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from oidc_provider_mock import User, run_server_in_thread
    folder = tmp_path_factory.mktemp("signin")
    db, teams = build(folder)
    users = [User(sub="lead", claims={"email": "lead-a@example.com", "name": "Lead A",
                                      "groups": ["leads-a"]}),
             User(sub="ana", claims={"email": "ana@example.com", "email_verified": True,
                                     "name": "Ana", "groups": []})]
    port = free_port()
    with run_server_in_thread(port=0, user_claims=users) as idp:
        cfg = folder / "emoscope.toml"
        cfg.write_text(CONFIG + f"""
[auth]
client_id = "emoscope"
client_secret = "env:TEST_OIDC_SECRET"
server_metadata_url = "http://localhost:{idp.server_port}/.well-known/openid-configuration"
redirect_uri = "http://localhost:{port}/oauth2callback"
""")
        old = {k: os.environ.get(k) for k in ("EMOSCOPE_CONFIG", "TEST_OIDC_SECRET")}
        os.environ.update(EMOSCOPE_CONFIG=str(cfg), TEST_OIDC_SECRET="not-checked-by-the-mock")
        elsewhere = tmp_path_factory.mktemp("elsewhere")  # not the repository root
        proc = start(db, port, elsewhere, host="127.0.0.1")
        try:
            yield {"url": f"http://localhost:{port}", "port": port, "teams": teams, "db": db}
        finally:
            stop(proc)
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def sign_in(browser, url: str, sub: str | None):
    """A fresh browser context, signed in as `sub` (None: not signed in)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = ctx.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("button", name="Sign in").wait_for(timeout=60000)
    if sub is not None:
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector('input[name="sub"]', timeout=30000)
        page.fill('input[name="sub"]', sub)
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=60000)
        settle(page)
    return ctx, page


def sessions_metric(page) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text="Sessions").first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


@pytest.mark.browser
def test_sign_in_gives_each_role_its_scope_and_nothing_without_it(site):
    from playwright.sync_api import sync_playwright
    teams, url = site["teams"], site["url"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Started from another folder, on loopback only.
    assert listening_addresses(site["port"]) <= {"0100007F"}, listening_addresses(site["port"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        ctx, page = sign_in(browser, url + f"/session?session={teams['A'][0]}", None)
        settle(page)
        body = page.locator("body").inner_text()
        page.screenshot(path=str(ARTIFACTS / "signin_page.png"), full_page=True)
        assert "Sign in" in body and not page.locator('[data-testid="stSidebarNav"]').count()
        assert not any(s in body for s in teams["A"] + teams["B"]) and "A-10" not in body
        assert not page.locator('[data-testid="stMetric"], audio').count()
        ctx.close()

        ctx, page = sign_in(browser, url, "lead")
        side = page.locator('[data-testid="stSidebar"]').inner_text().replace("\u2060", "")
        assert "lead-a@example.com" in side
        assert sessions_metric(page) == str(len(teams["A"]))
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Upload" in nav and "Audit" not in nav
        page.screenshot(path=str(ARTIFACTS / "signin_supervisor.png"), full_page=True)
        # A session of team B asked for by URL: not shown, not playable.
        page.goto(url + f"/session?session={teams['B'][0]}", wait_until="domcontentloaded")
        page.wait_for_selector('h1:has-text("Session")', timeout=60000)
        settle(page)
        body = page.locator("body").inner_text()
        assert "is available to you" in body
        page.screenshot(path=str(ARTIFACTS / "signin_supervisor_session.png"), full_page=True)
        assert "A-1" in body and "B-1" not in body  # one of A's sessions instead
        assert page.locator("audio").count() == 1
        ctx.close()

        ctx, page = sign_in(browser, url, "ana")
        assert sessions_metric(page) == str(len(teams["W"]))
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Upload" not in nav and "Audit" not in nav
        page.screenshot(path=str(ARTIFACTS / "signin_analyst.png"), full_page=True)
        ctx.close()
        browser.close()
    # Each sign-in is in the audit, under the identity the provider vouched for.
    from core.storage import audit
    from core.guard.access import operator
    rows = audit.read(Store(site["db"]), audit.AuditLog.beside(site["db"]), operator(),
                      action="sign-in")
    assert {"lead-a@example.com", "ana@example.com"} <= set(rows.who)


def test_serving_other_machines_without_sign_in_is_refused(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMOSCOPE_CONFIG", raising=False)
    monkeypatch.delenv("EMOSCOPE_RULES", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.streamlit/secrets.toml either
    res = CliRunner().invoke(app, ["dashboard", "--db", str(tmp_path / "x.duckdb"),
                                   "--host", "0.0.0.0"])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and re.search(r"refusing to serve on 0\.0\.0\.0.*no sign-in", lines[0])
