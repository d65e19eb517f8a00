"""Every dashboard page under AppTest on a store ingested from generated speech (tiny-random)."""
from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.base.labels import ZH
from core.guard.access import operator
from core.storage.queries import Reader
from core.storage.store import Store
from dashboard import pages

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
# Every page any signed-in role sees (dashboard/pages.py); Patterns has its own store and tests
# (tests/test_patterns_view.py), Upload and Audit & erasure theirs (test_upload, test_dashboard_access).
TITLES = {p.slug: p.title for p in pages.everyone() if p.slug != "patterns"}
PAGES = list(TITLES)


@pytest.fixture
def db(ingested_db, monkeypatch) -> Path:
    monkeypatch.setenv("EMOSCOPE_DB", str(ingested_db))
    return ingested_db


def open_page(name: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if name and name != "overview":
        at.switch_page(f"views/{name}.py")
        at.run()
    return at


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def audio_start(at: AppTest) -> int:
    audio = at.get("audio")
    assert audio, "no audio player on the page"
    return audio[0].proto.start_time


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_untrained_banner(db, page):
    at = open_page(page)
    clean(at)
    assert at.title[0].value == TITLES[page]  # its heading is its name in the navigation
    assert any("Untrained model" in w.value and "tiny-random" in w.value for w in at.warning)


def test_overview_kpis_and_filters(db):
    at = open_page()
    clean(at)
    sessions = Reader(Store(db), operator()).session_rows()
    assert metric(at, "Sessions") == str(len(sessions))
    hours = sessions.duration_s.sum() / 3600
    assert metric(at, "Audio hours") == f"{hours:,.2f}"
    alerts = Reader(Store(db), operator()).alerts()
    assert metric(at, "Flagged sessions") == str(alerts.session_id.nunique())
    at.text_input(key="ov_text").input("diary").run()
    clean(at)
    assert metric(at, "Sessions") == "1"
    at.text_input(key="ov_text").input("no-such-thing").run()
    assert any("No session matches" in i.value for i in at.info)
    at.text_input(key="ov_text").input("").run()
    at.multiselect(key="ov_team").set_value(["support"]).run()
    assert metric(at, "Sessions") == "1"
    at.multiselect(key="ov_team").set_value([])
    at.multiselect(key="ov_role").set_value(["speaker"]).run()  # the mono diary
    assert metric(at, "Sessions") == "1"
    rules = sorted(set(alerts.rule))
    at.multiselect(key="ov_role").set_value([])
    at.multiselect(key="ov_flags").set_value(rules[:1]).run()
    assert metric(at, "Sessions") == str(alerts[alerts.rule == rules[0]].session_id.nunique())


def test_label_toggle_switches_chart_labels_to_chinese(db):
    at = open_page()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t.get("name") for t in spec["data"]}
    assert names and names <= set(ZH) and not names & set(ZH.values())
    at.radio(key="lang").set_value("zh").run()
    clean(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t.get("name") for t in spec["data"]}
    assert names and names <= set(ZH.values())
    # The choice survives a change of page.
    at.switch_page("views/session.py").run()
    clean(at)
    assert at.session_state["lang_value"] == "zh"
    cursor = next(m.value for m in at.markdown if m.value.count("**") == 4)
    assert any(f"**{z}**" in cursor for z in ZH.values()), cursor
    # ... and a reload: the URL carries it, a fresh session starts in it
    assert at.query_params["lang"] in ("zh", ["zh"])
    fresh = AppTest.from_file(APP, default_timeout=120)
    fresh.query_params["lang"] = "zh"
    fresh.run()
    assert fresh.session_state["lang_value"] == "zh"


def test_session_timeline_click_moves_the_player(db):
    at = open_page("session")
    clean(at)
    sid = at.session_state["session_id"]
    assert audio_start(at) == 0
    segs = Reader(Store(db), operator()).segments(sid)
    target = segs.iloc[len(segs) // 2]
    # What a click on the timeline stores (session.handle_click): the moment to play from.
    at.session_state["seek"] = {"session_id": sid, "t_s": float(target.start_s) + 0.01,
                                "segment_id": None}
    at.run()
    clean(at)
    assert audio_start(at) == int(target.start_s + 0.01) > 0
    cursor = [m.value for m in at.markdown if "·" in m.value and "**" in m.value]
    assert any(f"({target.confidence:.2f})" in c for c in cursor), cursor
    # One lane per speaker, each with the 9 curves.
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    lanes = {t.get("yaxis", "y") for t in spec["data"]}
    assert len(lanes) == segs.speaker.nunique()


def test_session_page_lists_segments_and_exports(db):
    at = open_page("session")
    sid = at.session_state["session_id"]
    n = len(Reader(Store(db), operator()).segments(sid))
    assert metric(at, "Segments") == str(n)
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("CSV" in x for x in labels) and any("JSON" in x for x in labels)


def test_session_with_missing_recording_says_so(ingested_db, tmp_path, monkeypatch):
    copy = tmp_path / "copy.duckdb"
    shutil.copy(ingested_db, copy)
    with Store(copy).write() as con:
        con.execute("UPDATE sessions SET source_path = '/nowhere/gone.wav'")
    monkeypatch.setenv("EMOSCOPE_DB", str(copy))
    at = open_page("session")
    clean(at)
    assert any("no longer at" in w.value for w in at.warning)
    assert not at.get("audio")


def test_alert_drill_down_opens_the_session_at_the_moment(db):
    at = open_page("alerts")
    sid = Reader(Store(db), operator()).session_rows().session_id.iloc[0]
    # The drill-down writes the session and the moment, then switches page.
    at.session_state["session_id"] = sid
    at.session_state["seek"] = {"session_id": sid, "t_s": 3.7}
    at.switch_page("views/session.py").run()
    clean(at)
    assert at.session_state["session_id"] == sid
    assert audio_start(at) == 3


def test_similar_moments_from_a_segment(db):
    at = open_page("similar")
    clean(at)
    sims = [float(m.value) for m in at.metric if m.label == "Similarity"]
    store = Store(db)
    query = at.text_input(key="sim_segment").value
    q_session = store.query("SELECT session_id FROM segments WHERE segment_id = ?",
                            [query]).session_id.iloc[0]
    others = store.query("SELECT count(*) AS n FROM segments WHERE session_id <> ?",
                         [q_session]).n.iloc[0]
    assert len(sims) == min(10, others) > 0
    assert sims == sorted(sims, reverse=True)
    # opened directly, it offers moments to start from; the map marks the query and results
    assert at.selectbox(key="sim_pick").value == query
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    marked = {t.get("name"): len(t["x"]) if isinstance(t["x"], list) else None
              for t in spec["data"] if t.get("name") in ("query", "results")}
    assert set(marked) == {"query", "results"}, marked
    at.checkbox(key="sim_exclude").uncheck().run()
    at.multiselect(key="sim_role").set_value(["customer"]).run()
    clean(at)
    hits = [m.value for m in at.markdown if "customer ·" in m.value or "agent ·" in m.value
            or "speaker ·" in m.value]
    assert hits and all("customer ·" in h for h in hits)


def test_reports_build_every_format(db, toy_format):
    at = open_page("reports")
    clean(at)
    at.button(key="rp_build").click().run()
    clean(at)
    n = Reader(Store(db), operator()).counts()["segments"]
    assert any(f"{n:,} segments" in s.value for s in at.success)
    labels = [b.proto.label for b in at.get("download_button")]
    for want in ("CSV", "Parquet", "NPY", "JSON", "PDF"):
        assert any(want in x for x in labels), labels
    assert "Speakers (toy)" in labels  # every registered format (core.reporting.reports.FORMATS)


@pytest.mark.parametrize("page", PAGES)
def test_no_database_explains_how_to_ingest(tmp_path, monkeypatch, page):
    monkeypatch.setenv("EMOSCOPE_DB", str(tmp_path / "none.duckdb"))
    at = open_page(page)
    clean(at)
    assert any("emoscope ingest" in i.value for i in at.info)
    assert not (tmp_path / "none.duckdb").exists()


def test_new_data_shows_without_restart(ingested_db, tmp_path, monkeypatch):
    copy = tmp_path / "live.duckdb"
    shutil.copy(ingested_db, copy)
    monkeypatch.setenv("EMOSCOPE_DB", str(copy))
    at = open_page()
    before = int(metric(at, "Sessions"))
    with Store(copy).write() as con:
        con.execute("INSERT INTO sessions (session_id, source_path, file_name, sha256, status, "
                    "error, ingested_at) VALUES ('sfailed', '/x.wav', 'x.wav', 'ff', 'failed', "
                    "'no speech found', ?)", [datetime(2026, 11, 20)])
    at.run()
    clean(at)
    assert int(metric(at, "Sessions")) == before + 1


def test_find_similar_from_the_session_page(db):
    at = open_page("session")
    sid = at.session_state["session_id"]
    segs = Reader(Store(db), operator()).segments(sid)
    target = segs.iloc[-1]
    at.session_state["seek"] = {"session_id": sid, "t_s": float(target.start_s),
                                "segment_id": target.segment_id}
    at.run()
    at.button(key="find_similar").click().run()
    clean(at)
    assert at.title[0].value == "Similar moments"
    assert at.text_input(key="sim_segment").value == target.segment_id
    hits = [m.value for m in at.markdown if "`s" in m.value and " · " in m.value]
    assert hits and not any(sid in h for h in hits)  # the same session is left out by default


def test_overview_filters_survive_a_visit_to_another_page(db):
    at = open_page()
    at.multiselect(key="ov_team").set_value(["support"])
    at.text_input(key="ov_text").input("call").run()
    assert metric(at, "Sessions") == "1"
    at.switch_page("views/alerts.py").run()
    at.switch_page("views/overview.py").run()
    clean(at)
    assert at.multiselect(key="ov_team").value == ["support"]
    assert at.text_input(key="ov_text").value == "call"
    assert metric(at, "Sessions") == "1"


@pytest.fixture(scope="module")
def words_db(tmp_path_factory) -> Path:
    """Calls of two teams and a diary, with what was said (tests/scope_fixtures)."""
    from tests.scope_fixtures import build
    return build(tmp_path_factory.mktemp("words-dash"))[0]


def test_search_finds_moments_that_play_in_place_and_open_the_session(words_db, monkeypatch):
    monkeypatch.setenv("EMOSCOPE_DB", str(words_db))
    at = open_page("search")
    clean(at)
    assert any("Type what was said" in i.value for i in at.info)
    at.text_input(key="ws_q").input('"" !').run()  # a mistake is one line, not a trace
    assert [e.value for e in at.error] == ["give at least one word to search for"]
    at.text_input(key="ws_q").input('"want a refund"').run()
    clean(at)
    said = [m.value for m in at.markdown if "want a refund" in m.value]
    assert len(said) == 6 and all("angry" in m and "customer" in m for m in said)
    assert any("6 moments in 6 sessions" in c.value for c in at.caption)
    assert audio_start(at) == 10  # each moment's player starts where it was said
    at.multiselect(key="ws_team").set_value(["B"])
    at.multiselect(key="ws_role").set_value(["customer"])
    at.text_input(key="ws_q").input("refund OR cancel").run()
    clean(at)
    said = [m.value for m in at.markdown if "“" in m.value]
    assert said and all("B\\-1" in m for m in said)
    assert any("cancel my account" in m for m in said)
    first = Store(words_db).query(  # the newest call first
        "SELECT u.session_id, u.start_s FROM utterances u JOIN sessions s USING (session_id) "
        "WHERE u.text = 'I want a refund right now' AND s.team = 'B' "
        "ORDER BY s.recorded_at DESC").iloc[0]
    at.button(key="ws_open_0").click().run()
    clean(at)
    assert at.session_state["session_id"] == first.session_id
    assert at.session_state["seek"]["t_s"] == pytest.approx(first.start_s)
