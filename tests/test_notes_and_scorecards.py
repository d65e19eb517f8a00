"""Notes reach the store through the spool and the single writer; per-session rows and agent
scorecards say what the stored rows say."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from core.insight import rollups
from core.storage import notes
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.storage.store import Store


@pytest.fixture
def db(views_db, tmp_path):
    copy = tmp_path / "data" / "views.duckdb"
    copy.parent.mkdir()
    shutil.copy(views_db, copy)
    return copy


def test_a_note_shows_at_once_and_the_worker_stores_it(db):
    reader = Reader(Store(db), operator())
    sid = reader.sessions(SessionFilter(person="p-001")).session_id.iloc[0]
    spool = notes.spool_dir(db)
    notes.put(spool, sid, "Dr Lee", "Slept badly.\nFollow up on Friday.")
    shown = reader.notes_with_pending(spool, SessionFilter.of(sid))
    assert shown[["author", "body", "pending"]].values.tolist() == \
        [["Dr Lee", "Slept badly.\nFollow up on Friday.", True]]
    assert reader.notes().empty  # nothing written to the database by the dashboard
    notes.put(spool, "s-nobody", "Dr Lee", "lost")  # a session that does not exist
    (spool / "broken.json").write_text("{not json")
    # the worker's pass (no audio waiting: it only folds the spool)
    res = CliRunner().invoke(app, ["worker", "--db", str(db), "--once", "--model",
                                   "tiny-random", "--settle", "0"])
    assert res.exit_code == 0, res.output
    assert "stored 1 note" in res.output and "no stored session s-nobody" in res.output
    stored = reader.notes()
    assert stored.author.tolist() == ["Dr Lee"] and stored.session_id.tolist() == [sid]
    after = reader.notes_with_pending(spool, SessionFilter.of(sid))
    assert after.pending.tolist() == [False] and after.note_id.tolist() == \
        stored.note_id.tolist()
    rejected = sorted(p.name for p in (spool / "rejected").iterdir())
    assert len(rejected) == 2 and "broken.json" in rejected
    assert not list(spool.glob("*.json"))
    # a note stored before a crash that kept its file is not stored twice
    again = spool / f"{stored.note_id.iloc[0]}.json"
    again.write_text(pd.Series({"note_id": stored.note_id.iloc[0], "session_id": sid,
                                "author": "Dr Lee", "body": "x",
                                "created_at": "2026-11-20T10:00:00"}).to_json())
    assert notes.fold(Store(db), spool) == (1, [])
    assert len(reader.notes()) == 1


def test_notes_follow_the_readers_scope(db):
    reader = Reader(Store(db), operator())
    p1 = reader.sessions(SessionFilter(person="p-001")).session_id.iloc[0]
    p2 = reader.sessions(SessionFilter(person="p-002")).session_id.iloc[0]
    spool = notes.spool_dir(db)
    for sid in (p1, p2):
        notes.put(spool, sid, "an", "text")
    assert set(reader.notes_with_pending(spool, SessionFilter(person="p-002")).session_id) \
        == {p2}
    with pytest.raises(notes.NoteError, match="author"):
        notes.put(spool, p1, " \x07 ", "text")
    with pytest.raises(notes.NoteError, match="text"):
        notes.put(spool, p1, "an", "   ")


def test_session_rows_and_scorecards_match_the_store(views_db):
    store = Store(views_db)
    reader = Reader(store, operator())
    rows = rollups.session_table(reader).set_index("session_id")
    sql = store.query(
        "SELECT a.session_id, count(*) FILTER (WHERE severity = 'high') AS high, "
        "count(*) AS n, min(t_s) AS first FROM alerts a GROUP BY 1").set_index("session_id")
    assert rows.alerts.sum() == sql.n.sum()
    assert (rows.loc[sql.index, "high"] == sql.high).all()
    assert (rows.loc[sql.index, "first_alert_t_s"] == sql["first"]).all()
    talk = store.query("SELECT session_id, speaker, talk_s, neg_last, interruptions FROM "
                       "session_metrics").set_index(["session_id", "speaker"])
    one = rows[rows.agent_id.notna()].index[0]
    a, c = talk.loc[(one, "agent"), "talk_s"], talk.loc[(one, "customer"), "talk_s"]
    assert rows.loc[one, "talk_share"] == pytest.approx(a / (a + c))
    card = rollups.agent_scorecards(reader).set_index("agent_id")
    calls = store.query("SELECT agent_id, count(*) AS n FROM sessions WHERE status = 'ok' "
                        "AND agent_id IS NOT NULL GROUP BY 1").set_index("agent_id").n
    assert card.calls.to_dict() == calls.to_dict()
    ben = rows[rows.agent_id == "a-ben"]
    assert card.loc["a-ben", "cust_neg_last"] == pytest.approx(ben.customer_neg_last.mean())
    assert card.loc["a-ben", "interruptions_per_call"] == \
        pytest.approx(ben.agent_interruptions.mean())
    assert card.loc["a-ben", "high"] == ben.high.sum()
    # each agent against the median of their own team
    support = card[card.team == "support"]
    assert (support.mean_volatility_vs_team ==
            support.mean_volatility - support.mean_volatility.median()).all()
