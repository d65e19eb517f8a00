"""Search by words across calls: the query language, the index kept equal to the store
(saves, re-ingests, erasure, a stale or broken file), filters, and the scope of whoever asks —
through core, `emoscope search` and the audit."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app as cli
from core.admin import erasure
from core.index import word_index
from core.index import word_search as ws
from core.guard.access import operator
from core.storage.audit import AuditLog
from core.storage.queries import Reader
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from tests.scope_fixtures import ANALYST, SUP_A, build, results
from tests.store_fixtures import RULES


@pytest.fixture(scope="module")
def scoped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words")
    db, teams = build(folder)
    return db, teams


def found(reader, text, **kw):
    return ws.search(reader, text, ws.Filters(**kw)).hits


# -- the query language -------------------------------------------------------------------------
def test_queries_are_words_phrases_any_of_and_prefixes_never_fts_syntax():
    q = ws.parse('charged twice OR double "Cancel my  account" refund* OR credit')
    assert str(q) == 'charged twice OR double "cancel my account" refund* OR credit'
    assert q.fts() == ('("charged") AND ("twice" OR "double") AND ("cancel my account") AND '
                       '("refund" * OR "credit")')
    # FTS5 operators and column filters typed by a user are only words; a word with
    # punctuation inside is the phrase the tokenizer made of it when indexing (e-mail)
    assert ws.parse('text: NEAR(a b) "x" AND -y e-mail').fts() == \
        '("text") AND ("near a") AND ("b") AND ("x") AND ("and") AND ("y") AND ("e mail")'
    for bad, says in [("", "at least one word"), ('"" ... !', "at least one word"),
                      ("x" * 201, "at most 200"), (" ".join("w" * 17), "at most 16")]:
        with pytest.raises(ws.QueryError, match=says):
            ws.parse(bad)
    with pytest.raises(ws.QueryError, match="unknown emotion furious"):
        ws.Filters(emotions=("furious",)).check()


# -- what is found, and for whom ------------------------------------------------------------------
def test_phrases_filters_and_scope(scoped):
    db, teams = scoped
    everyone = Reader(Store(db), operator())
    hits = found(everyone, '"want a refund"')
    assert set(hits.session_id) == set(sum(teams.values(), []))
    assert set(hits.text) == {"I want a refund right now"} and set(hits.label) == {"angry"}
    assert list(hits["when"]) == sorted(hits["when"], reverse=True)  # newest first
    assert found(everyone, '"refund a want"').empty  # a phrase keeps its order
    # a supervisor of team A: only team A, whatever the filters ask for
    sup = Reader(Store(db), SUP_A)
    assert set(found(sup, "refund").session_id) == set(teams["A"])
    assert found(sup, "cancel").empty and found(sup, "refund", teams=("B",)).empty
    assert set(found(Reader(Store(db), ANALYST), "refund").session_id) == set(teams["W"])
    # role, emotion (of the overlapping segments), any-of, prefixes and dates
    cust = found(sup, "refund", roles=("customer",))
    assert set(cust.speaker) == {"customer"} and len(cust) == 2 * len(teams["A"])
    angry = found(sup, "refund", roles=("customer",), emotions=("angry",))
    assert set(angry.text) == {"I want a refund right now"}
    assert set(found(everyone, "cancel OR dropping").session_id) == set(teams["B"])
    assert set(found(everyone, "refun*", roles=("agent",)).text) == \
        {"I can refund the duplicate payment"}
    late = found(everyone, "refund", since="2026-11-05", until="2026-11-07")
    assert set(late.session_id) == set(teams["B"])  # calls of the 5th and 6th
    capped = ws.search(everyone, "refund", limit=4)
    assert len(capped.hits) == 4 and capped.more


# -- emoscope search ------------------------------------------------------------------------------
LEADS = """
[access]
[[access.grants]]
email = "lead-a@example.com"
role = "supervisor"
teams = ["A"]

[[access.grants]]
email = "lead-b@example.com"
role = "supervisor"
teams = ["B"]
"""


def test_cli_search_finds_a_phrase_only_where_the_user_may_look_and_audits_it(
        scoped, tmp_path, monkeypatch):
    db, teams = scoped
    (tmp_path / "e.toml").write_text(LEADS)
    monkeypatch.setenv("EMOSCOPE_CONFIG", str(tmp_path / "e.toml"))
    run = CliRunner()
    seen = {}
    for who in ("lead-a@example.com", "lead-b@example.com"):
        out = run.invoke(cli, ["search", '"want a refund"', "--db", str(db), "--as", who,
                               "--role", "customer", "--json"])
        assert out.exit_code == 0, out.output
        seen[who] = {json.loads(line)["session_id"] for line in out.stdout.splitlines()}
    assert seen["lead-a@example.com"] == set(teams["A"])
    assert seen["lead-b@example.com"] == set(teams["B"])
    none = run.invoke(cli, ["search", "cancel", "--db", str(db), "--as", "lead-a@example.com"])
    assert none.exit_code == 1 and "0 moments" in none.output
    plain = run.invoke(cli, ["search", "cancel", "--db", str(db), "--emotion", "angry",
                             "--team", "B", "--since", "2026-11-01"])
    assert plain.exit_code == 0 and "please cancel my account" in plain.stdout
    bad = run.invoke(cli, ["search", "x", "--db", str(db), "--emotion", "furious"])
    assert bad.exit_code == 2 and "unknown emotion" in bad.output
    # each search is in the audit: who, how many terms, the filters' names, the sessions shown
    # — never the words searched for
    rows = [r for r in AuditLog.beside(db).spooled() if r["action"] == "search"]
    a = next(r for r in rows if r["who"] == "lead-a@example.com" and r["detail"]["hits"])
    assert set(a["detail"]["sessions"]) == set(teams["A"]) and a["detail"]["filters"] == ["roles"]
    assert all("refund" not in json.dumps(r) and "cancel" not in json.dumps(r) for r in rows)
    from core.base.keyed import secret  # a keyed pseudonym: no guess can be tested without it
    assert a["target"] == ws.audit_target(ws.parse('"want a refund"'), secret(db))
    assert a["target"].startswith("words hmac:")


# -- kept equal to the store ------------------------------------------------------------------
def test_a_commit_syncs_only_its_sessions_and_the_fingerprint_follows(tmp_path, monkeypatch):
    """After the first sync, each commit reads only its own sessions' transcripts, and the
    fingerprint it records stays the store's through saves, a re-save and an erasure."""
    from dataclasses import replace
    store = Store(tmp_path / "w.duckdb")
    store.migrate()
    writer = SessionWriter(store, RULES)
    run = writer.start_run("tiny-random", "", False, "cpu", "engine", {})
    calls = results(tmp_path / "archive")
    synced = []
    inner = word_index._sync_sessions
    monkeypatch.setattr(word_index, "_sync_sessions", lambda *a: synced.append(inner(*a))
                        or synced[-1])
    writer.save_many(calls[:3], run)
    assert synced[-1] is None  # this process's first sync of the store: every session's state
    steps = [lambda: writer.save_many([calls[3], replace(  # a new session and a re-save
                 calls[0], utterances=calls[0].utterances[:3])], run),
             lambda: erasure.erase(store, "session", calls[1].session_id, operator()),
             lambda: writer.save(calls[4], run)]
    for step in steps:
        step()
        if step is not steps[1]:
            assert synced[-1].incremental
        assert word_index.recorded_fingerprint(store.path) == word_index.fingerprint(store)
    assert word_index.store_state(store)[0] == dict(
        (sid, (stamp, n)) for sid, stamp, n in word_index.connect(store.path).execute(
            "SELECT session_id, stamp, n FROM sessions").fetchall())


def test_a_scopes_allowed_sessions_are_handed_to_the_index_once_per_commit(scoped, monkeypatch):
    db, teams = scoped
    opened = []
    real = word_index.connect
    monkeypatch.setattr(word_index, "connect", lambda *a, **k: opened.append(a) or real(*a, **k))
    ws._connections.clear()
    sup = Reader(Store(db), SUP_A)
    first = found(sup, "refund")
    assert set(first.session_id) <= set(teams["A"]) and len(first)
    for _ in range(3):
        assert found(sup, "refund").equals(first)
    assert len(opened) == 1  # one connection, its allowed sessions filled once
    found(sup, "cancel")  # another query, same scope: the same connection
    assert len(opened) == 1
    found(Reader(Store(db), ANALYST), "refund")  # another scope: its own
    assert len(opened) == 2


def test_the_index_follows_reingest_and_erasure_and_repairs_itself(scoped, tmp_path):
    """Last: it erases and re-ingests in the module's store."""
    db, teams = scoped
    store = Store(db)
    b = teams["B"][0]
    reader = Reader(store, operator())
    assert b in set(found(reader, '"cancel my account"').session_id)
    # an erased session's words leave the index file itself, not only its answers
    erasure.erase(store, "session", b, operator())
    assert b not in set(found(reader, '"cancel my account"').session_id)
    raw = b"".join(p.read_bytes() for p in word_index.folder_of(db).iterdir() if p.is_file())
    assert b.encode() not in raw
    # a re-ingest with other words replaces the old ones
    r = next(x for x in results(tmp_path / "again") if x.meta.team == "A")
    from dataclasses import replace
    from core.base.types import Utterance, utterance_id_for
    r = replace(r, utterances=(Utterance(utterance_id_for(r.session_id, 1, 0), 1, "customer",
                                         0.5, 5.0, "my parcel never arrived", "en", 0.9, "t"),
                                   Utterance(utterance_id_for(r.session_id, 1, 1), 1, "customer",
                                             6.0, 9.0, "我的包裹一直没有到", "zh", 0.9, "t")))
    writer = SessionWriter(store, RULES)
    writer.save(r, writer.start_run("tiny-random", "", False, "cpu", "engine", {}))
    assert r.session_id not in set(found(reader, "refund").session_id)
    assert list(found(reader, "parcel").session_id) == [r.session_id]
    # a Chinese word inside a sentence without spaces, shown as it was said
    hits = found(reader, "包裹")
    assert list(hits.session_id) == [r.session_id] and list(hits.text) == ["我的包裹一直没有到"]
    assert len(found(reader, '"没有到" OR 退款')) == 1 and len(found(reader, "裹包")) == 0
    # a broken index file is rebuilt from the store before it is searched
    word_index.path_of(db).write_bytes(b"not a database")
    ws._checked.clear()
    assert list(found(reader, "parcel").session_id) == [r.session_id]
