"""Analytics through the store: written at save time, rebuilt identically by recompute."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.insight import people, rollups
from core.storage import derived
from core.base.labels import LABELS
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.analysis.rules import load_rules
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import (ChannelQuality, Segment, SessionMeta, SessionResult, segment_id_for,
                        session_id_for)
from tests.analytics_fixtures import onehot

DEFAULTS = load_rules(Path(__file__).resolve().parent.parent / "core" / "analysis" / "default_rules.toml")
# a small reference so the store-relative rule fires within a few sessions
RULES = dataclasses.replace(DEFAULTS, alerts=tuple(
    dataclasses.replace(a, min_reference=2) if a.kind == "volatility_percentile" else a
    for a in DEFAULTS.alerts))


def call(k: int, customer_labels, customer_emb, day: int = 2) -> SessionResult:
    """A two-channel call: the customer's segments at 0, 10, 20 ... s, the agent's in between."""
    sha = hashlib.sha256(f"call-{k}".encode()).hexdigest()
    sid = session_id_for(sha)
    segs = []
    for i, (lab, e) in enumerate(zip(customer_labels, customer_emb)):
        segs.append(Segment(segment_id_for(sid, 1, i), 1, "customer", 10.0 * i, 10.0 * i + 6,
                            lab, 0.9, np.array(onehot(lab), np.float32),
                            np.array([e, 0.0], np.float32), 0.1, 0.0, (), None))
        segs.append(Segment(segment_id_for(sid, 0, i), 0, "agent", 10.0 * i + 6,
                            10.0 * i + 9, "neutral", 0.3 if k == 0 else 0.9,
                            np.array(onehot("neutral"), np.float32),
                            np.array([0.0, float(i % 2)], np.float32), 0.1, 0.0, (), None))
    duration = 10.0 * len(customer_labels)
    chans = (ChannelQuality(0, "agent", duration, 0.1, 0.0, duration / 3, ()),
             ChannelQuality(1, "customer", duration, 0.1, 0.0, duration / 2, ()))
    meta = SessionMeta(agent_id=f"a{k % 2}", customer_id="c1" if k % 2 else f"c{k}", team="T",
                       recorded_at=f"2026-11-{day:02d}T10:00:00")
    return SessionResult(sid, f"/x/{k}.wav", f"{k}.wav", sha, duration, 2, meta, chans,
                         tuple(segs))


CALLS = [
    call(0, ["neutral", "neutral", "angry", "angry", "angry"], [0, 1, 2, 3, 4], day=2),
    call(1, ["neutral", "happy", "neutral", "happy"], [0, 1, 0, 1], day=3),
    call(2, ["happy", "neutral", "sad", "sad"], [0, 0.5, 1, 1.5], day=4),
    call(3, ["neutral", "angry", "neutral", "angry"], [0, 10, 0, 10], day=9),
    call(4, ["sad", "neutral", "neutral", "neutral"], [0, 0, 0, 0], day=10),
]


def derived_tables(store: Store) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (store.query("SELECT * FROM session_metrics ORDER BY session_id, speaker"),
            store.query("SELECT * FROM alerts ORDER BY session_id, t_s, speaker, rule"),
            store.query("SELECT segment_id, rolling_volatility, fallback_action FROM segments "
                        "ORDER BY segment_id"))


def saved(path: Path, rules=RULES) -> Store:
    s = Store(path)
    s.migrate()
    writer = SessionWriter(s, rules)
    for r in CALLS:
        writer.save(r, None)
    return s


@pytest.fixture()
def store(tmp_path) -> Store:
    return saved(tmp_path / "a.duckdb")


def only(sid: str) -> SessionFilter:
    return SessionFilter.of(sid)


def test_save_writes_metrics_alerts_and_segment_values(store):
    m = Reader(store, operator()).session_metrics(only(CALLS[0].session_id)).set_index("speaker")
    assert m.index.tolist() == ["agent", "customer", "all"]
    assert m.loc["customer", "volatility"] == pytest.approx(1.0)  # steps of 1 along x
    assert m.loc["customer", "trend"] == "worsening"  # neutral at first, angry at the end
    assert m.loc["agent", "unreliable"] and m.loc["agent", "unreliable_cause"].startswith(
        "no quality flag")
    assert m.loc["all", "agent_id"] == "a0" and m.loc["all", "rules_digest"] == RULES.digest
    seg = store.query("SELECT segment_id, rolling_volatility, fallback_action FROM segments "
                      "WHERE session_id = ? AND channel = 1 ORDER BY start_s",
                      [CALLS[0].session_id])
    assert pd.isna(seg.rolling_volatility[0]) and seg.rolling_volatility[1:].tolist() == \
        pytest.approx([1, 1, 1, 1])
    rules = set(Reader(store, operator()).alerts(only(CALLS[0].session_id)).rule)
    assert {"angry_streak", "ends_worse", "negative_last_quarter", "unreliable_audio"} <= rules


def test_volatility_rule_compares_with_earlier_sessions_only(store):
    p95 = Reader(store, operator()).alerts(rule="volatility_p95")
    # call 3 (steps of 10) is far jumpier than calls 0-2; calls 0-1 had too few before them
    assert p95.session_id.tolist() == [CALLS[3].session_id]
    hit = p95.iloc[0]
    assert hit.speaker == "customer" and "of 3 earlier customer sessions" in hit.detail


def test_recompute_rebuilds_identical_tables(store):
    before = derived_tables(store)
    seen = []
    out = derived.recompute(store, RULES, progress=lambda done, total: seen.append((done, total)),
                            chunk=2)
    after = derived_tables(store)
    for a, b in zip(before, after):
        pd.testing.assert_frame_equal(a, b)
    assert out["sessions"] == 5 and out["alerts"] == len(before[1])
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_recompute_fills_a_store_without_analytics(tmp_path, store):
    plain = saved(tmp_path / "plain.duckdb")
    with plain.write() as con:  # as a store written before the analytics existed
        con.execute("DELETE FROM session_metrics; DELETE FROM alerts; "
                    "UPDATE segments SET rolling_volatility = NULL, fallback_action = NULL")
    assert plain.query("SELECT count(*) n FROM session_metrics").n[0] == 0
    derived.recompute(plain, RULES)
    for a, b in zip(derived_tables(store), derived_tables(plain)):
        pd.testing.assert_frame_equal(a, b)


def test_recompute_applies_changed_rules(store):
    stricter = dataclasses.replace(RULES, alerts=tuple(
        dataclasses.replace(a, min_count=4) if a.rule == "angry_streak" else a
        for a in RULES.alerts))
    derived.recompute(store, stricter)
    assert Reader(store, operator()).alerts(rule="angry_streak").empty  # the longest run is 3
    assert set(Reader(store, operator()).session_metrics().rules_digest) == {stricter.digest}


def test_replacing_a_session_replaces_its_derived_rows(store):
    reader = Reader(store, operator())
    n = len(reader.alerts())
    assert len(reader.alerts(only(CALLS[0].session_id))) >= 4
    calm = dataclasses.replace(CALLS[0], segments=tuple(
        dataclasses.replace(s, label="neutral", confidence=0.9,
                            scores=np.array(onehot("neutral"), np.float32))
        for s in CALLS[0].segments))
    SessionWriter(store, RULES).save(calm, None)  # the old alerts must not linger
    m = reader.session_metrics(only(CALLS[0].session_id)).set_index("speaker")
    assert m.loc["customer", "trend"] == "stable" and m.loc["customer", "neg_share"] == 0
    assert len(reader.alerts()) < n and reader.alerts(only(CALLS[0].session_id)).empty


def test_failed_sessions_get_no_metrics(store):
    bad = SessionResult("sdeadbeef0000000", "/x/bad.wav", "bad.wav", "de" * 32, 0, 0,
                        SessionMeta(), status="failed", error="no audio stream")
    SessionWriter(store, RULES).save(bad, None)
    assert Reader(store, operator()).session_metrics(only("sdeadbeef0000000")).empty
    assert derived.recompute(store, RULES)["sessions"] == 5


def test_reads_for_the_dashboard(store):
    reader = Reader(store, operator())
    high = reader.alerts(severity="high")
    assert set(high.rule) == {"angry_streak"} and "agent_id" in high
    assert len(reader.alerts(SessionFilter(since="2026-11-09"))) == \
        len(reader.alerts(only(CALLS[3].session_id))) + \
        len(reader.alerts(only(CALLS[4].session_id)))
    weekly = rollups.aggregates(reader, by="agent", period="week")
    assert weekly.sessions.sum() == 5 and set(weekly.key) == {"a0", "a1"}
    base = people.baselines(reader, RULES)
    assert set(base.person) >= {"a0", "a1", "c1"}
    assert set(people.person_sessions(reader).columns) >= {"person", "mix", "volatility"}
    assert list(reader.session_metrics().mix.iloc[0]) and len(LABELS) == 9


def test_cli_recompute(store, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app
    runner = CliRunner()
    res = runner.invoke(app, ["recompute", "--db", str(store.path)])
    assert res.exit_code == 0, res.output
    assert "recomputed 5 sessions" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[[alerts]]\nrule = "x"\nkind = "nope"\n')
    res = runner.invoke(app, ["recompute", "--db", str(store.path), "--rules", str(bad)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    res = runner.invoke(app, ["recompute", "--db", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2


def test_ingest_refuses_a_broken_rules_file_before_reading_audio(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    (tmp_path / "emoscope.toml").write_text("[trend]\nthreshold = \n")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "missing.wav"), "--db",
                                   str(tmp_path / "x.duckdb"), "--model", "tiny-random"])
    assert res.exit_code == 2 and "emoscope.toml is not valid TOML" in res.output
    assert not (tmp_path / "x.duckdb").exists()
