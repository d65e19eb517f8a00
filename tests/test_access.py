"""Scopes below the UI: identities map to roles and scopes, and every read — lists, one
session, one segment, audio, similar moments, exports, the CLI export — shows a supervisor of
team A nothing of team B, an analyst only their programme."""
from __future__ import annotations

import importlib
import inspect
import io
import json
import pkgutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.storage import analysers, corrections, notes
from core.reporting import reports
from core.insight import people, rejudged, rollups
from core.guard.access import (NOTHING, AccessConfig, AccessError, Scope, Viewer, hash_api_key,
                         operator)
from core.storage.queries import AudioUnavailable, Reader, SessionFilter
from core.admin.settings import load_settings
from core.storage.store import Store
from tests.scope_fixtures import ADMIN, ANALYST, CONFIG, SUP_A, build
from tests.store_fixtures import RULES


@pytest.fixture(scope="module")
def scoped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scoped")
    db, teams = build(folder)
    return db, teams, folder


def access() -> AccessConfig:
    import tomllib
    return AccessConfig.from_dict(tomllib.loads(CONFIG)["access"])


# -- identities → viewers ---------------------------------------------------------------------
def test_claims_map_to_roles_and_scopes():
    cfg = access()
    lead = cfg.viewer_for_claims({"email": "Lead@Example.com", "groups": ["leads-a", "x"]})
    assert lead.roles == {"supervisor"} and lead.scope == Scope(teams=frozenset({"A"}))
    ana = cfg.viewer_for_claims({"email": "ana@example.com", "email_verified": True,
                                 "groups": []})
    assert ana.roles == {"analyst"} and ana.scope.tags == {"wellbeing"} and not ana.scope.teams
    boss = cfg.viewer_for_claims({"sub": "u1", "groups": "emoscope-admins"})
    assert boss.is_admin and boss.scope.everything and boss.who == "u1"
    both = cfg.viewer_for_claims({"email": "ana@example.com", "email_verified": True,
                                  "groups": ["leads-a"]})
    assert both.roles == {"analyst", "supervisor"}
    assert both.scope == Scope(teams=frozenset({"A"}), tags=frozenset({"wellbeing"}))
    stranger = cfg.viewer_for_claims({"email": "eve@example.com", "groups": ["leads-b"]})
    assert stranger.roles == frozenset() and stranger.scope == NOTHING


def test_an_email_grant_needs_a_verified_email():
    """Issue 23 item 7: an e-mail grant accepted `email_verified: false` (anyone who can type
    the address into a provider profile)."""
    cfg = access()
    for claims in ({"email": "ana@example.com", "email_verified": False},
                   {"email": "ana@example.com"}, {"email": "ana@example.com",
                                                  "email_verified": "true"}):
        assert cfg.viewer_for_claims(claims).roles == frozenset(), claims
    assert cfg.viewer_for_email("ana@example.com").roles == {"analyst"}  # the CLI's --as


def test_a_programmes_tag_is_for_its_own_people():
    """Issue 23 item 7: a supervisor could tag an upload with a programme's tag (`diary`) and
    file it into the analysts' scope. The rule the API and the Upload page both apply."""
    cfg = access()
    lead = cfg.viewer_for_claims({"groups": ["leads-a"]})
    ana = cfg.viewer_for_claims({"email": "ana@example.com", "email_verified": True})
    boss = cfg.viewer_for_claims({"groups": ["emoscope-admins"]})
    assert cfg.tags_refused(lead, ["north", "wellbeing"]) == ["wellbeing"]
    assert cfg.tags_refused(ana, ["wellbeing"]) == [] and cfg.tags_refused(boss, ["wellbeing"]) == []


def test_api_keys_are_matched_by_hash_only():
    cfg = AccessConfig.from_dict({"api_keys": [
        {"name": "crm", "sha256": hash_api_key("s3cret"), "role": "supervisor",
         "teams": ["A"]}]})
    assert cfg.viewer_for_api_key("s3cret").scope.teams == {"A"}
    assert cfg.viewer_for_api_key("s3cret ") is None
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize("raw, says", [
    ({"grants": [{"group": "g", "role": "boss"}]}, "role must be one of"),
    ({"grants": [{"role": "admin"}]}, "needs `group` or `email`"),
    ({"grants": [{"group": "g", "role": "analyst", "programmes": ["nope"]}]}, "unknown programme"),
    ({"grants": [{"group": "g", "role": "admin", "team": ["A"]}]}, "unknown key"),
    ({"api_keys": [{"name": "k", "sha256": "short", "role": "admin"}]}, "64 hex"),
])
def test_a_broken_access_section_names_the_entry(raw, says):
    with pytest.raises(AccessError, match=says):
        AccessConfig.from_dict(raw)


def test_settings_file_is_found_through_the_environment(tmp_path, monkeypatch):
    (tmp_path / "e.toml").write_text(CONFIG + "\n[retention]\naudio_days = 30\n")
    monkeypatch.setenv("EMOSCOPE_CONFIG", str(tmp_path / "e.toml"))
    s = load_settings()
    assert s.retention.audio_days == 30 and s.access.grants and not s.sign_in


# -- every read ---------------------------------------------------------------------------------
def every_read(r: Reader, sid: str, seg: str) -> dict[str, set]:
    """Each public read, reduced to the sessions it returned."""
    def ids(df):
        return set(df.session_id) if "session_id" in df else set(df.get("latest_session_id", []))
    try:
        audio = {sid} if r.audio_path(sid) else set()
    except AudioUnavailable:
        audio = set()
    return {
        "sessions": ids(r.sessions()), "session_rows": ids(r.session_rows()),
        "summary": ids(r.summary()), "segments": ids(r.segments(sid)),
        "frames": ids(r.frames(sid)), "channels": ids(r.channels(sid)),
        "segment": ids(r.segment(seg)), "label_seconds": ids(r.label_seconds()),
        "session_metrics": ids(r.session_metrics()), "alerts": ids(r.alerts()),
        "volatility_peaks": ids(r.volatility_peaks()),
        "export_segments": ids(r.export_segments(SessionFilter())),
        "person_sessions": ids(people.person_sessions(r)),
        "baselines": ids(people.baselines(r, RULES)),
        "aggregates": {"n"} if rollups.aggregates(r, by="team").sessions.sum() else set(),
        "n_sessions": set(range(r.n_sessions())), "counts": set(range(r.counts()["segments"])),
        "models": set(range(len(r.models()))), "latest_model": {r.latest_model()} - {None},
        "jobs": ids(r.jobs()) if "jobs" in r.tables() else set(), "audio_path": audio,
        "job": ({(r.job(j) or {}).get("session_id")} - {None}
                if "jobs" in r.tables() and (j := _job_of(r, sid)) else set()),
        "judge_segments": ids(r.judge_segments()), "channel_flags": ids(r.channel_flags()),
        "notes": ids(r.notes()),
        "notes_with_pending": ids(r.notes_with_pending(notes.spool_dir(r.store.path))),
        "judged_alerts": ids(rejudged.judged_alerts(r, RULES)),
        "stale_sessions": rejudged.stale_sessions(r, RULES),
        "session_table": ids(rollups.session_table(r)),
        "agent_scorecards": set(range(int(rollups.agent_scorecards(r).calls.sum()))),
        "journey": ids(people.journey(r, "c-shared", RULES)),
        "words_and_voice": ids(people.words_and_voice(r, "c-shared", RULES)),
        "segment_space": {(r.segment_space(seg) or {}).get("session_id")} - {None},
        "segment_keys": _sessions_of_keys(r, np.concatenate(
            [r.segment_keys(m, d) for m, d in _spaces(r)] or [np.zeros(0, np.uint64)])),
        "segments_by_key": ids(r.segments_by_key(_all_keys(r))),
        "pattern_segments": ids(r.pattern_segments()),
        "utterances": ids(r.utterances()), "transcript": ids(r.transcript(sid)),
        "words": ids(r.words()), "audio_events": ids(r.audio_events()),
        "categories": ids(r.categories()),
        "search_sessions": ids(r.search_sessions()),
        "analysis_rows": set().union(*(ids(r.analysis_rows(sid, t.name))
                                       for t in analysers.tables())),
        "known_values": ids(r.store.query(  # the sessions of the teams it names: its scope's
            "SELECT session_id FROM sessions WHERE list_contains(?, team)",
            [r.known_values("team")])),
        "newest_day": {r.newest_day()} - {None},
        "corrections": ids(r.corrections()),
        "corrections_with_pending": ids(r.corrections_with_pending(
            corrections.spool_dir(r.store.path))),
        "corrected_moments": ids(r.corrected_moments()),
    }


def _spaces(r: Reader) -> list[tuple[str, int]]:
    """Every (model, dim) of the store, read unscoped, to ask the scoped reader about."""
    rows = r.store.query("SELECT DISTINCT coalesce(r.model, '') AS m, len(g.embedding) AS d "
                         "FROM segments g JOIN sessions s USING (session_id) LEFT JOIN runs r "
                         "USING (run_id) WHERE g.embedding IS NOT NULL")
    return list(zip(rows.m, rows.d))


def _all_keys(r: Reader) -> list[int]:
    return [int(k) for k in r.store.query("SELECT segment_key FROM segments").segment_key]


def _sessions_of_keys(r: Reader, keys) -> set:
    rows = r.store.query("SELECT segment_key, session_id FROM segments")
    by_key = dict(zip(rows.segment_key.astype("uint64"), rows.session_id))
    return {by_key[k] for k in np.asarray(keys, np.uint64)}


def _job_of(r: Reader, sid: str) -> str | None:
    """The job that stored session `sid` (read unscoped, to ask the scoped reader about it)."""
    rows = r.store.query("SELECT job_id FROM jobs WHERE session_id = ?", [sid])
    return None if rows.empty else rows.job_id[0]


# The schema, ingest runs and the pattern list (sizes over the store): no session data.
# Heads: classifier weights and figures over corrections, no session's rows.
NOT_SESSION_READS = {"tables", "runs", "patterns", "heads", "head_activations", "active_head"}


def test_every_public_read_is_checked_here(scoped):
    """The Reader's reads and core.insight's functions of a Reader alike."""
    db, teams, _ = scoped
    public = {n for n, _ in inspect.getmembers(Reader, inspect.isfunction)
              if not n.startswith("_")}
    import core.insight
    rooms = [importlib.import_module(f"core.insight.{m.name}")
             for m in pkgutil.iter_modules(core.insight.__path__)]
    assert {m.__name__ for m in rooms} >= {people.__name__, rejudged.__name__, rollups.__name__}
    public |= {n for m in rooms for n, fn in inspect.getmembers(m, inspect.isfunction)
               if fn.__module__ == m.__name__ and not n.startswith("_")}
    checked = set(every_read(Reader(Store(db), SUP_A), "s", "g")) | NOT_SESSION_READS
    assert public - checked == set(), "add the new read to every_read"


def test_a_supervisor_of_team_a_reads_nothing_of_team_b(scoped):
    db, teams, _ = scoped
    store = Store(db)
    b_sid = teams["B"][0]
    b_seg = store.query("SELECT segment_id FROM segments WHERE session_id = ?",
                        [b_sid]).segment_id[0]
    notes.put(notes.spool_dir(db), b_sid, "lead-b", "pending note on a team B call")
    fixes = corrections.spool_dir(db)
    corrections.put(fixes, b_seg, b_sid, "sad", "lead-b")
    corrections.fold(store, fixes)  # one stored ...
    corrections.put(fixes, b_seg, b_sid, "angry", "lead-b")  # ... and one pending
    full = every_read(Reader(store, operator()), b_sid, b_seg)
    sup = every_read(Reader(store, SUP_A), b_sid, b_seg)
    assert b_sid in full["notes_with_pending"] and full["journey"] & set(teams["B"])
    assert b_sid in full["corrections_with_pending"] and b_sid in full["corrected_moments"]
    assert len(sup["agent_scorecards"]) == len(teams["A"]) < len(full["agent_scorecards"])
    for name, got in sup.items():
        assert not got & set(teams["B"]) and not got & set(teams["W"]), name
        if name in ("segments", "frames", "channels", "segment", "audio_path"):
            assert full[name] and not got, name  # B's own session: nothing at all
    assert sup["sessions"] == set(teams["A"])
    assert len(sup["n_sessions"]) == len(teams["A"]) < len(full["n_sessions"])
    assert 0 < len(sup["counts"]) < len(full["counts"])
    # ... and reads of team A's sessions still work
    a_sid = teams["A"][0]
    assert Reader(store, SUP_A).audio_path(a_sid).is_file()
    assert len(Reader(store, SUP_A).segments(a_sid))


def test_an_analyst_reads_only_their_programme(scoped):
    db, teams, _ = scoped
    r = Reader(Store(db), ANALYST)
    assert set(r.session_rows().session_id) == set(teams["W"])
    assert set(r.export_segments(SessionFilter()).session_id) == set(teams["W"])
    assert set(Reader(Store(db), Viewer("nobody")).session_rows().session_id) == set()


def test_audio_out_of_scope_reads_like_no_session_at_all(scoped):
    db, teams, _ = scoped
    r = Reader(Store(db), SUP_A)
    with pytest.raises(AudioUnavailable) as hidden:
        r.audio_path(teams["B"][0])
    with pytest.raises(AudioUnavailable) as missing:
        r.audio_path("s-no-such")
    assert str(hidden.value).replace(teams["B"][0], "X") == \
        str(missing.value).replace("s-no-such", "X")


def test_relative_source_paths_play_only_from_the_audio_root(scoped, tmp_path):
    db, teams, folder = scoped
    sid = teams["A"][0]
    copy = tmp_path / "rel.duckdb"
    import shutil
    shutil.copy(db, copy)
    with Store(copy).write() as con:
        con.execute("UPDATE sessions SET source_path = ? WHERE session_id = ?",
                    [f"archive/{sid}.wav", sid])
    with pytest.raises(AudioUnavailable, match="audio_root"):
        Reader(Store(copy), ADMIN).audio_path(sid)
    assert Reader(Store(copy), ADMIN, folder).audio_path(sid) == folder / "archive" / f"{sid}.wav"


def test_exports_hold_only_what_the_viewer_may_see(scoped, monkeypatch):
    db, teams, _ = scoped
    r = Reader(Store(db), SUP_A)
    seen = {}
    real_pdf = reports.to_pdf
    monkeypatch.setattr(reports, "to_pdf", lambda d: seen.setdefault("pdf", d) and real_pdf(d))
    # A caller that asks for every session (here: the operator's list) still gets only team A.
    everyone = Reader(Store(db), operator()).sessions()
    spec = reports.ReportSpec("sessions", session_ids=tuple(everyone.session_id))
    report = reports.build(r, spec, RULES)
    files = {fmt: blob for fmt, (_, blob) in report.files.items()}
    assert set(report.session_ids) == set(teams["A"])
    assert set(pd.read_csv(io.BytesIO(files["csv"])).session_id) == set(teams["A"])
    assert set(pd.read_csv(io.BytesIO(files["sessions"])).session_id) == set(teams["A"])
    assert set(pd.read_parquet(io.BytesIO(files["parquet"])).session_id) == set(teams["A"])
    assert {x["session_id"] for x in json.loads(files["json"])} == set(teams["A"])
    ids = np.load(io.BytesIO(files["npy"]))["segment_id"]
    assert len(ids) and all(str(s).startswith(tuple(teams["A"])) for s in ids)
    # The PDF lists, counts and charts the same sessions only.
    pdf = seen["pdf"]
    assert set(pdf.sessions.session_id) == set(teams["A"])
    assert set(pdf.segments.session_id) == set(teams["A"])
    assert set(pdf.alerts.session_id) <= set(teams["A"])
    assert files["pdf"].startswith(b"%PDF")


def test_cli_export_as_a_user_is_limited_to_their_grants(scoped, tmp_path, monkeypatch):
    from cli.main import app
    db, teams, folder = scoped
    monkeypatch.setenv("EMOSCOPE_CONFIG", str(folder / "emoscope.toml"))
    out = tmp_path / "exports"
    res = CliRunner().invoke(app, ["export", "--db", str(db), "--out", str(out), "--format",
                                   "csv", "--as", "ana@example.com"])
    assert res.exit_code == 0, res.output
    csv = next(out.glob("*.csv"))
    assert set(pd.read_csv(csv).session_id) == set(teams["W"])
    res = CliRunner().invoke(app, ["export", "--db", str(db), "--out", str(out), "--as",
                                   "eve@example.com"])
    assert res.exit_code == 2 and "no role" in res.output
    # Without --as: the machine's operator, everything; both exports are in the audit.
    # Without --out: into exports/ beside the database, wherever the command ran.
    res = CliRunner().invoke(app, ["export", "--db", str(db), "--format", "json"])
    assert res.exit_code == 0, res.output
    from core.base import places
    assert list(places.folder(db, places.EXPORTS).glob("*.json"))
    res = CliRunner().invoke(app, ["audit", "--db", str(db), "--json", "--action", "export"])
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["who"] for r in rows][-1] == "ana@example.com" and len(rows) == 2
    assert set(rows[-1]["detail"]["sessions"]) == set(teams["W"])


def test_the_upload_queue_shows_each_viewer_only_their_teams_jobs(tmp_path):
    from core.intake.jobs import JobQueue
    store = Store(tmp_path / "q.duckdb")
    store.migrate()
    jobs = JobQueue(store)
    mine = jobs.add("u1.wav", "a-call.wav", 1, 1, {"team": "A"})
    theirs = jobs.add("u2.wav", "b-call.wav", 1, 1, {"team": "B", "tags": ["south"]})
    jobs.add("u3.wav", "diary.wav", 1, 1, {"tags": ["wellbeing"]})
    assert Reader(store, SUP_A).jobs().job_id.tolist() == [mine]
    assert Reader(store, SUP_A).job(mine)["original_name"] == "a-call.wav"
    assert Reader(store, SUP_A).job(theirs) is None and Reader(store, ADMIN).job(theirs)
    assert Reader(store, ANALYST).jobs().original_name.tolist() == ["diary.wav"]
    assert len(Reader(store, ADMIN).jobs()) == 3
