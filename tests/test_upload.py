"""The upload page (AppTest): hostile names become safe inbox files; the page shows job states."""
from __future__ import annotations

import datetime
import json
import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.intake import inbox
from ingest.worker import Worker, default_config
from tests.store_fixtures import writer_for
from tests.audio_gen import write

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "views" / "upload.py")
ROOT_ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SAFE = re.compile(r"^u\d{14}-[0-9a-f]{12}\.(wav|bin)$")
HOSTILE = ["../../x.wav", "..\\..\\evil.wav", "a\x00b.wav", "$(touch pwned).wav",
           "; rm -rf ~ ;.wav", "`id`|cat.wav", "x" * 300 + ".wav", "same.wav", "same.wav",
           "/etc/passwd", "notes.wav"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("EMOSCOPE_DB", str(data / "emoscope.duckdb"))
    monkeypatch.delenv("EMOSCOPE_INBOX", raising=False)
    monkeypatch.delenv("EMOSCOPE_UPLOAD_MB", raising=False)
    return data


def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def submit(at: AppTest, files, **fields) -> AppTest:
    at.file_uploader(key=f"up_files_{at.session_state['up_batch']}").set_value(files)
    for key, value in fields.items():
        if key in ("up_agent", "up_team"):  # a choice: a known value, else "Other…" and a name
            box = at.selectbox(key=key)
            if value not in box.options:
                box.set_value("Other…").run()
                key = f"{key}_new"
            else:
                box.set_value(value)
                continue
        at.text_input(key=key).set_value(value)
    at.button(key="up_submit").click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_hostile_names_become_safe_files_inside_the_inbox(env, tmp_path, speech):
    wav = write(tmp_path / "speech.wav", speech).read_bytes()
    before = {p for p in tmp_path.rglob("*")}
    files = [(name, b"not audio" if name == "notes.wav" else wav, "audio/wav") for name in HOSTILE]
    at = page()
    at.date_input(key="up_date").set_value(datetime.date(2026, 11, 3))
    at.time_input(key="up_time").set_value(datetime.time(14, 5))
    at = submit(at, files, up_agent="a-ana", up_team="support", up_tags="vip, refund")
    assert any(f"{len(HOSTILE)} files queued" in s.value for s in at.success)

    box = env / "inbox"
    new = {p for p in tmp_path.rglob("*")} - before
    spool = env / "audit"  # each upload is audited, before the file is taken
    keys = env / "access"  # the store's secret, made for the audit's pseudonyms
    assert all(inbox.inside(p, box) or inbox.inside(p, spool) or inbox.inside(p, keys)
               for p in new), \
        sorted(map(str, new))  # nothing escaped
    acts = [json.loads(x) for x in (spool / "audit.jsonl").read_text().splitlines()]
    assert [a["action"] for a in acts] == ["upload"] * len(HOSTILE)
    assert all("/" not in a["target"] for a in acts)
    audio = inbox.waiting(box)
    assert len(audio) == len(HOSTILE) and len({p.name for p in audio}) == len(HOSTILE)
    for p in audio:
        assert SAFE.match(p.name), p.name
        side = json.loads(inbox.sidecar_of(p).read_text())
        assert "/" not in side["original_name"] and "\\" not in side["original_name"]
        assert "\x00" not in side["original_name"] and len(side["original_name"]) <= 120
        assert side["metadata"] == {"agent_id": "a-ana", "team": "support",
                                    "recorded_at": "2026-11-03T14:05",
                                    "tags": ["vip", "refund"]}
    originals = sorted(json.loads(inbox.sidecar_of(p).read_text())["original_name"]
                       for p in audio)
    assert "x.wav" in originals and "evil.wav" in originals and "passwd" in originals
    assert originals.count("same.wav") == 2
    assert not list(box.glob(".*.part"))  # no temporaries left behind
    # Before any worker has run, the page lists them as waiting and says how to start one.
    table = at.dataframe[0].value
    assert (table.status == "⏳ waiting for the worker").sum() == len(HOSTILE)
    assert not table.isna().any().any()  # empty cells, never the word "None"
    hint = next(w.value for w in at.warning if "emoscope worker" in w.value)
    assert "--model emotion2vec_plus_large" in hint and "--model tiny-random" in hint
    # The metadata stays for the next batch; only the chosen files are cleared.
    assert at.text_input(key="up_agent_new").value == "a-ana"
    assert not at.file_uploader(key="up_files_1").value


def test_the_page_shows_queued_done_and_failed_with_the_reason(env, tmp_path, speech, model):
    wav = write(tmp_path / "speech.wav", speech).read_bytes()
    at = submit(page(), [("call.wav", wav, "audio/wav"), ("notes.wav", b"hello" * 99, "audio/wav")])
    db = env / "emoscope.duckdb"
    w = Worker(writer_for(db), model, default_config(db, settle_s=0, poll_s=0.05),
               echo=lambda line: None)
    w.start()
    assert w.scan() == 2
    at.run()
    table = at.dataframe[0].value
    assert sorted(table.status) == ["🕒 queued"] * 2
    while w.step():
        pass
    at.run()
    table = at.dataframe[0].value.set_index("file")
    assert table.loc["call.wav", "status"] == "✅ done"
    assert table.loc["call.wav", "session"].startswith("s")
    assert table.loc["notes.wav", "status"] == "❌ failed"
    assert "not a recognised audio file" in table.loc["notes.wav", "reason"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["done"] == "1" and metrics["failed"] == "1" and metrics["waiting"] == "0"


def test_team_and_agent_are_chosen_from_the_known_ones_or_entered_new(env, views_db):
    """Issue 24: team and agent were free text, so "Support" and "support" became two teams.
    The choices offer the stored ones; "Other…" opens a box for a new name."""
    db = env / "emoscope.duckdb"
    shutil.copy(views_db, db)  # a copy: the upload writes its inbox and audit beside the store
    at = page()
    assert at.selectbox(key="up_team").options == ["(none)", "billing", "support", "wellbeing",
                                                   "Other…"]
    assert at.selectbox(key="up_agent").options == ["(none)", "a-ana", "a-ben", "a-cy", "a-dai",
                                                    "Other…"]
    assert "up_agent_new" not in [t.key for t in at.text_input]  # shown only after "Other…"
    at = submit(at, [("a.wav", b"RIFF" * 9, "audio/wav")], up_team="support", up_agent="a-eve")
    at = submit(at, [("b.wav", b"RIFF" * 9, "audio/wav")], up_agent="a-ben")
    metas = {json.loads(inbox.sidecar_of(p).read_text())["original_name"]:
             json.loads(inbox.sidecar_of(p).read_text())["metadata"]
             for p in inbox.waiting(env / "inbox")}
    assert metas["a.wav"] == {"team": "support", "agent_id": "a-eve"}
    assert metas["b.wav"] == {"team": "support", "agent_id": "a-ben"}


def test_files_over_the_size_limit_are_refused(env, monkeypatch):
    monkeypatch.setenv("EMOSCOPE_UPLOAD_MB", "1")
    at = submit(page(), [("big.wav", b"\0" * (1024 * 1024 + 1), "audio/wav"),
                         ("small.wav", b"\0" * 1000, "audio/wav")])
    shown = [e.value.replace("\\", "").replace("\u2060", "") for e in at.error]  # escaped
    assert any("big.wav" in e and "limit" in e for e in shown)
    assert len(inbox.waiting(env / "inbox")) == 1
    assert not list((env / "inbox").glob("*.part")) and len(list((env / "inbox").glob("*.json"))) == 1


def test_the_page_runs_inside_the_app_navigation(env):
    at = AppTest.from_file(str(Path(PAGE).parent.parent / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/upload.py")
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Upload recordings"
    assert at.file_uploader(key="up_files_0").accept_multiple_files


def test_an_inbox_outside_the_data_directory_is_refused(env, monkeypatch, tmp_path):
    monkeypatch.setenv("EMOSCOPE_INBOX", str(tmp_path / "elsewhere"))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert any("outside the data directory" in e.value for e in at.error)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.browser
def test_upload_through_the_browser_lands_safely_in_the_inbox(env, tmp_path, speech):
    """The real HTTP upload path: Chromium drops files on the page of a served dashboard."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, ERRORS, free_port, serve, settle
    wav = write(tmp_path / "speech.wav", speech).read_bytes()
    port = free_port()
    proc = serve(env / "emoscope.duckdb", port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}/upload", wait_until="domcontentloaded")
            page.wait_for_selector('h1:has-text("Upload recordings")', timeout=30000)
            settle(page)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([
                {"name": "$(touch pwned); call.wav", "mimeType": "audio/wav", "buffer": wav},
                {"name": "call.wav", "mimeType": "audio/wav", "buffer": wav}])
            page.wait_for_selector('text="call.wav"', timeout=30000)
            page.get_by_label("Agent").click()  # the choice; a new agent is under "Other…"
            page.get_by_role("option", name="Other…").click()
            page.get_by_label("New agent").fill("a-ana")
            page.get_by_role("button", name="Queue for analysis").click()
            page.wait_for_selector('text="2 files queued for analysis."', timeout=30000)
            settle(page)
            errors = page.locator(ERRORS).count()
            page.screenshot(path=str(ROOT_ARTIFACTS / "upload.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert errors == 0
    audio = inbox.waiting(env / "inbox")
    assert len(audio) == 2 and all(SAFE.match(p.name) for p in audio)
    assert all(p.read_bytes() == wav for p in audio)
    sides = [json.loads(inbox.sidecar_of(p).read_text()) for p in audio]
    assert sorted(s["original_name"] for s in sides) == ["$(touch pwned); call.wav", "call.wav"]
    assert all(s["metadata"] == {"agent_id": "a-ana"} for s in sides)
    assert not list(tmp_path.rglob("pwned"))
