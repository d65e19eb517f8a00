"""The supervisor's, the analyst's and the alert views under AppTest, on the 40-session store of
tests/views_fixtures.py: the Agents and Person pages, alerts that agree on every page and in
the PDF, and every Overview filter moving the figures as the stored rows say."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.insight import people, rollups
from core.storage import notes
from core.reporting import reports
from core.base.labels import NEGATIVE
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.analysis.rules import load_rules
from core.storage.store import Store
from tests.test_dashboard import clean, metric

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def env(views_db):
    """The store and its rules file for every AppTest of this module."""
    saved = {k: os.environ.get(k) for k in ("EMOSCOPE_DB", "EMOSCOPE_RULES")}
    os.environ["EMOSCOPE_DB"] = str(views_db)
    os.environ["EMOSCOPE_RULES"] = str(views_db.with_name("emoscope.toml"))
    yield views_db
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def open_page(name: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if name != "overview":
        at.switch_page(f"views/{name}.py").run()
    clean(at)
    return at


def values(arr) -> list:
    """A plotly array as a list, whether plain or a typed array (`bdata`)."""
    if isinstance(arr, dict) and "bdata" in arr:
        import base64

        import numpy as np
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"]).tolist()
    return list(arr)


def caption_count(at: AppTest) -> tuple[int, int]:
    cap = next(c.value for c in at.caption if re.match(r"[\d,]+ alerts? in ", c.value))
    got = re.match(r"([\d,]+) alerts? in ([\d,]+) sessions?", cap)
    return int(got[1].replace(",", "")), int(got[2].replace(",", ""))


# -- alerts: one source of truth ---------------------------------------------------------------
def test_alerts_agree_on_every_page_and_in_the_pdf(env):
    reader = Reader(Store(env), operator())
    stored = reader.alerts()
    at = open_page("alerts")
    assert caption_count(at) == (len(stored), stored.session_id.nunique())
    assert any("These are the stored alerts" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert table.shape[0] == len(stored) and (table["response"] != "").all()
    overview = open_page("overview")
    assert metric(overview, "Flagged sessions") == str(stored.session_id.nunique())
    report = reports.build(reader, reports.ReportSpec(), load_rules(os.environ[
        "EMOSCOPE_RULES"]), formats=("sessions",))
    per_session = pd.read_csv(pd.io.common.BytesIO(report.files["sessions"][1]))
    assert per_session.alerts.sum() == len(stored)
    from core.reporting.report_pdf import ReportData, kpis
    k = kpis(ReportData("t", "s", reader.sessions(), reader.export_segments(SessionFilter()),
                        reader.alerts(SessionFilter(session_ids=report.session_ids))))
    assert k["Alerts"].split()[0] == str(len(stored))
    # one session: the Session page counts the same alerts
    sid = stored.session_id.value_counts().index[0]
    page = open_page("session", session_id=sid)
    assert metric(page, "Alerts") == str((stored.session_id == sid).sum())


def test_alert_sliders_and_filters(env):
    reader = Reader(Store(env), operator())
    m = reader.session_metrics()
    at = open_page("alerts")
    at.slider(key="th_default_negative_last_quarter").set_value(0.9)
    at.slider(key="th_default_trend").set_value(1.0).run()
    clean(at)
    calls = m[(m.rule_set == "default") & (m.speaker == "customer")]
    stored = reader.alerts()
    kept = stored[~stored.rule.isin(["negative_last_quarter", "ends_worse"])]
    want = len(kept) + int((calls.neg_last >= 0.9 - 1e-9).sum()) + \
        int((calls.neg_delta >= 1.0 - 1e-9).sum())
    assert caption_count(at)[0] == want < len(stored)
    assert any("Judged with the thresholds above" in c.value for c in at.caption)
    at.slider(key="th_default_negative_last_quarter").set_value(0.5)
    at.slider(key="th_default_trend").set_value(0.2).run()
    assert caption_count(at)[0] == len(stored)
    # the window: agent, team, person, role and period each narrow the list as stored
    for key, value, expect in (
            ("al_agent", "a-ben", stored.agent_id == "a-ben"),
            ("al_team", "wellbeing", stored.team == "wellbeing"),
            ("al_person", "p-002", stored.customer_id == "p-002")):
        at.selectbox(key=key).set_value(value).run()
        clean(at)
        assert caption_count(at)[0] == int(expect.sum()) > 0, key
        at.selectbox(key=key).set_value(None)
    at.multiselect(key="al_role").set_value(["agent"]).run()
    assert caption_count(at)[0] == int((stored.speaker == "agent").sum()) > 0
    at.multiselect(key="al_role").set_value([])
    # "Latest week" counts back from the newest session, not from today: never empty here.
    at.button_group(key="al_period").set_value("Latest week").run()
    clean(at)
    newest = reader.newest_day()
    when = pd.to_datetime(stored.recorded_at.fillna(stored.ingested_at)).dt.date
    week = int((when >= newest - dt.timedelta(days=6)).sum())
    assert caption_count(at)[0] == week > 0
    # ... and the choice follows the user to the Agents page and the Overview.
    at.switch_page("views/agents.py").run()
    assert at.button_group(key="ag_period").value == "Latest week"
    at.switch_page("views/overview.py").run()
    assert at.button_group(key="ov_period").value == "Latest week"


# -- the Agents page ---------------------------------------------------------------------------
def test_agents_page(env):
    reader = Reader(Store(env), operator())
    card = rollups.agent_scorecards(reader)
    at = open_page("agents")
    shown = at.dataframe[0].value.set_index("agent_id")
    assert sorted(shown.index) == sorted(card.agent_id)
    pd.testing.assert_series_equal(shown.cust_neg_last.sort_index() / 100,  # in percent
                                   card.set_index("agent_id").cust_neg_last.sort_index())
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert values(spec["data"][0]["x"]) == card.agent_id.tolist()  # one bar per agent
    assert spec["data"][1]["name"] == "team median"
    at.session_state["ag_agent"] = "a-ben"  # what a click on the chart or a row stores
    at.run()
    clean(at)
    calls = at.dataframe[1].value
    ben = rollups.session_table(reader, SessionFilter(agent="a-ben"))
    assert sorted(calls.session_id) == sorted(ben.session_id)
    rank = calls.severity.map({"high": 3, "medium": 2, "low": 1}).fillna(0).tolist()
    assert rank == sorted(rank, reverse=True)  # worst first
    at.selectbox(key="ag_team").set_value("billing").run()
    assert set(at.dataframe[0].value.team) == {"billing"}


# -- the Person page ---------------------------------------------------------------------------
def test_person_page_journey_and_notes(env, tmp_path):
    reader = Reader(Store(env), operator())
    j = people.journey(reader, "p-001", load_rules(os.environ["EMOSCOPE_RULES"]))
    at = open_page("person", person="p-001")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    entries = [t for t in spec["data"] if t.get("name") == "neg_share"][0]
    assert values(entries["y"]) == pytest.approx(j.neg_share.tolist()) and len(j) == 7
    ringed = [t for t in spec["data"] if t.get("name") == "departs from baseline"]
    assert len(values(ringed[0]["x"])) == int(j.departs.sum()) > 0
    band = [t for t in spec["data"] if t.get("name", "").startswith("baseline")][0]
    hi = values(band["error_y"]["array"])
    assert hi == pytest.approx((j.neg_share_hi - j.baseline_neg_share).fillna(0).tolist())
    assert metric(at, "Entries") == "7"
    # the person's alerts: as many as their report counts, entry by entry in the table
    stored = reader.alerts()
    mine = stored[stored.session_id.isin(j.session_id)]
    assert metric(at, "Alerts") == str(len(mine)) != "0"
    table = at.dataframe[0].value
    assert int(table.alerts.sum()) == len(mine)
    assert any("No transcripts for these entries" in c.value for c in at.caption)
    # p-002's diaries have words: each entry's words beside its voice, and the share of it in
    # a distress state (fused) against the person's own baseline
    rp = open_page("person", person="p-002")
    w = people.words_and_voice(reader, "p-002", load_rules(os.environ["EMOSCOPE_RULES"]))
    drawn = [t for c in rp.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]
             if t.get("name") == "distress share"]
    assert values(drawn[0]["y"]) == pytest.approx(w.distress.tolist())
    assert w.distress.notna().all() and w.baseline_distress.notna().sum() == len(w) - 2
    said = next(d.value for d in rp.dataframe if "said" in d.value.columns)
    assert said.said.tolist() == w.said.tolist() and "i am tired" in " ".join(w.said)
    # the Reports page's "A person" lists the same people, starting with the one followed
    rp.switch_page("views/reports.py").run()
    rp.button_group(key="rp_kind").set_value("person").run()
    assert rp.selectbox(key="rp_person").value == "p-002"
    assert rp.selectbox(key="rp_person").options == ["p-001", "p-002"] + sorted(
        set(people.person_sessions(reader).query("role == 'customer'").person))
    # a note: shown at once, pending, and in the spool, not in the database
    spool = notes.spool_dir(env)
    try:
        at.text_input(key="note_author").input("Dr Lee")
        at.text_area(key="note_body_person").input("Sleeping better this week.")
        at.button(key="FormSubmitter:note_form_person-Add note").click().run()
        clean(at)
        shown = [m.value for m in at.markdown if "Dr Lee" in m.value]
        assert shown and "pending" in shown[0]
        assert any("Sleeping better" in t.value for t in at.text)
        assert reader.notes().empty and len(list(spool.glob("*.json"))) == 1
        # the session page shows the entry's note too
        latest = j.session_id.iloc[-1]
        page = open_page("session", session_id=latest)
        assert any("Sleeping better" in t.value for t in page.text)
    finally:
        for f in spool.glob("*.json"):
            f.unlink()


# -- the Overview filters move the figures -----------------------------------------------------
def expected(store: Store, keep_session, keep_segment=lambda g: True) -> tuple[int, str]:
    """Sessions and negative share from the stored rows, for a session and segment test."""
    s = store.query("SELECT * FROM sessions")
    s["when"] = pd.to_datetime(s.recorded_at.fillna(s.ingested_at))
    g = store.query("SELECT session_id, speaker, label, end_s - start_s AS d FROM segments")
    flags = store.query("SELECT session_id, list(DISTINCT rule) AS rules FROM alerts GROUP BY 1")
    s = s.merge(flags, on="session_id", how="left")
    tot = g.groupby(["session_id", "label"]).d.sum().reset_index()
    s["dominant"] = s.session_id.map(tot.sort_values("d").groupby("session_id").label.last())
    s["speakers"] = s.session_id.map(g.groupby("session_id").speaker.agg(set))
    keep = s[s.apply(keep_session, axis=1)]
    seg = g[g.session_id.isin(keep.session_id) & g.apply(keep_segment, axis=1)]
    neg = seg.d[seg.label.isin(NEGATIVE)].sum() / seg.d.sum()
    return len(keep), f"{neg:.0%}"


FILTERS = {
    "role": ("ov_role", ["agent"], lambda s: isinstance(s.speakers, set) and
             "agent" in s.speakers, lambda g: g.speaker == "agent"),
    "agent": ("ov_agent", ["a-ben"], lambda s: s.agent_id == "a-ben", None),
    "team": ("ov_team", ["billing"], lambda s: s.team == "billing", None),
    "person": ("ov_person", ["p-002"], lambda s: "p-002" in (s.customer_id, s.agent_id), None),
    "label": ("ov_dominant", ["sad"], lambda s: s.dominant == "sad", None),
    "flags": ("ov_flags", ["ends_worse"], lambda s: s.rules is not None and not isinstance(
        s.rules, float) and "ends_worse" in list(s.rules), None),
    "date": (None, (dt.date(2026, 11, 10), dt.date(2026, 11, 20)),
             lambda s: dt.date(2026, 11, 10) <= s["when"].date() <= dt.date(2026, 11, 20), None),
}


@pytest.fixture(scope="module")
def overview(env):
    return open_page("overview")


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_overview_filter_moves_the_figures(env, overview, name):
    key, value, keep_session, keep_segment = FILTERS[name]
    at = overview
    for k in ("ov_role", "ov_agent", "ov_team", "ov_person", "ov_dominant", "ov_flags"):
        at.multiselect(key=k).set_value([])
    dates = next(d for d in at.date_input if d.key.startswith("ov_dates_"))
    span = (dt.date(2026, 11, 1), dt.date(2026, 11, 28))
    dates.set_value(value if key is None else span)
    if key is not None:
        at.multiselect(key=key).set_value(value)
    at.run()
    clean(at)
    store = Store(env)
    n, neg = expected(store, keep_session, keep_segment or (lambda g: True))
    everything = expected(store, lambda s: True)
    assert (metric(at, "Sessions"), metric(at, "Negative-emotion share")) == (str(n), neg)
    assert (str(n), neg) != (str(everything[0]), everything[1])  # the filter did something


def test_an_alert_opens_on_the_alerting_speakers_segment(env):
    """At the cursor (and Find similar) show the speaker the alert is about, even where the
    other speaker's turn overlaps that moment."""
    reader = Reader(Store(env), operator())
    al = reader.alerts(rule="negative_last_quarter")
    a = al[al.speaker == "customer"].iloc[0]
    at = open_page("session", session_id=a.session_id,
                   seek={"session_id": a.session_id, "t_s": float(a.t_s), "segment_id": None})
    cursor = next(m.value for m in at.markdown if m.value.startswith("**") and " · " in m.value)
    assert cursor.startswith("**customer**"), cursor


def test_the_session_page_reads_as_a_conversation(env):
    """Each line of the transcript with its emotion, what its words say and the two fused
    (a disagreement with its own suggested response), turns per speaker, and a click on a
    line's time moves the player (and the highlight) there."""
    reader = Reader(Store(env), operator())
    utts = reader.utterances()
    # a call with a masked line that also meets a category (cancel_while_angry)
    tagged = set(reader.categories().session_id)
    masked = utts[(utts.fused == "masked_frustration") & (utts.speaker == "customer")
                  & utts.session_id.isin(tagged)].iloc[0]
    sid = masked.session_id
    lines = reader.transcript(sid)
    at = open_page("session", session_id=sid)
    said = [m.value for m in at.markdown if "thank you for calling" in m.value]
    assert said and said[0].startswith(":"), said  # the line, after its emotion badge
    line = next(m.value for m in at.markdown if masked.text in m.value)
    assert f"words {masked.sentiment:+.2f}" in line and \
        ":red-badge[masked frustration]" in line, line
    from dashboard.components.markdown import md
    reply = load_rules(env.with_name("emoscope.toml")).responses_en["masked_frustration"]
    assert any(md(reply) in c.value for c in at.caption)  # as the page escapes it
    # the categories it meets, by name and severity
    cats = reader.categories(SessionFilter.of(sid))
    shown = [m.value for m in at.markdown if m.value.startswith("**Categories:**")]
    assert len(shown) == 1 and len(cats) and all(md(c) in shown[0] for c in cats.category)
    assert len([c for c in at.chat_message]) >= 2  # agent and customer turns
    third = lines.iloc[2]
    at.button(key=f"line_{sid}_2").click().run()
    assert at.session_state["seek"]["t_s"] == pytest.approx(third.start_s)
    marked = [m.value for m in at.markdown if ":orange-background[" in m.value]
    assert len(marked) == 1 and third.text.split()[0] in marked[0]
