"""The vectorised writer stores what the writer before it stored, row for row and bit for bit
(bench/writer_before.py keeps the old path for this test and for bench/import.py's ratio), and
DuckDB leaves no write-ahead log behind a writer."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import ingest.prosody  # noqa: F401 - registers pitch_hz and loudness_dbfs on segments
from bench import writer_before
from core.base.labels import LABELS
from core.analysis.rules import load_rules
from core.storage import sessions
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import (ChannelQuality, Curve, Segment, SessionMeta, SessionResult, Utterance,
                        segment_id_for)

DIM = 8


def _rules():
    """The packaged rules, with a volatility reference short enough to fire here, two
    categories that fire on these sessions (words in a negative or mixed fused state, an
    urgent alert; a raised voice) and a named set (another window and threshold) for
    diaries."""
    from core.analysis.categories import Category
    base = load_rules(None)
    base = replace(base, categories=base.categories + (
        Category("upset_words", severity="urgent", alert=True, phrases=("words",),
                 fused=("negative", "mixed")),
        Category("raised", raised_voice=True)))
    alerts = tuple(replace(a, min_reference=2) if a.kind == "volatility_percentile" else a
                   for a in base.alerts)
    diaries = replace(base, alerts=alerts, name="diaries", teams=("wellbeing",), window=3,
                      confidence_threshold=0.5, sets=())
    return replace(base, alerts=alerts, sets=(diaries,))


def _session(k: int, rng, kind: str = "call", status: str = "ok") -> SessionResult:
    sid = f"s{k:015d}"
    sha = f"{k:015d}{0:049d}"  # session_id_for(sha) == sid
    roles = ("speaker",) if kind == "diary" else ("agent", "customer")
    meta = SessionMeta(agent_id=None if kind == "diary" else "a-1", customer_id=f"c-{k % 3}",
                       team="wellbeing" if kind == "diary" else "support",
                       recorded_at="2026-11-02T10:00:00", tags=("t",))
    if status != "ok":
        return SessionResult.failed(f"/x/{sid}.wav", sha, meta, "undecodable")
    duration = 0.0 if kind == "no duration" else float(rng.uniform(20, 60))
    span = duration or 40.0
    segs = []
    for ch, role in enumerate(roles):
        if kind == "silent customer" and role == "customer":
            continue
        n_seg = 0 if kind == "no speech" else int(rng.integers(1, 14))
        starts = np.sort(rng.uniform(0, span - 3, n_seg)).round(3)
        for n, s in enumerate(starts):
            scores = rng.dirichlet(np.ones(9) * 0.3)
            top = int(scores.argmax())
            if rng.random() < 0.15:  # an uncertain label, or a streak of anger
                top = LABELS.index(rng.choice(["other", "unknown", "angry"]))
            length = 0.0 if rng.random() < 0.1 else float(rng.uniform(0.2, 5))  # or empty
            if segs and rng.random() < 0.1:  # touching the one before
                s = segs[-1].end_s
            flags = ("too_quiet",) if rng.random() < 0.2 else ()
            sounded = {} if rng.random() < 0.1 else {  # how it sounded, or unmeasured
                "pitch_hz": float(rng.uniform(90, 400)), "loudness_dbfs": float(rng.uniform(
                    -45, -5)), "rate_wps": float(rng.uniform(1, 4))}
            segs.append(Segment(segment_id_for(sid, ch, n), ch, role, float(s),
                                float(s) + length, LABELS[top], float(scores[top]), scores,
                                rng.standard_normal(DIM), 0.05, 0.0, flags, None, sounded))
    if kind == "tie" and len(segs) > 1:  # two channels starting at the same moment
        a = segs[0]
        segs[-1] = replace(segs[-1], start_s=a.start_s, end_s=a.start_s + 2.0)
    curves = tuple(Curve(ch, r, np.arange(0, 3, 0.5), rng.dirichlet(np.ones(9), 6))
                   for ch, r in enumerate(roles))
    channels = tuple(ChannelQuality(ch, r, duration, 0.05, 0.0, duration / 2,
                                    ("clipped",) if k % 4 == 0 else ())
                     for ch, r in enumerate(roles))
    utterances = tuple(  # what was said, with its sentiment (or none): the fused states
        Utterance(f"{sid}-c{s.channel}-u{n:05d}", s.channel, s.speaker, s.start_s, s.end_s + 0.3,
                  "words", sentiment=None if n % 4 == 3 else float(rng.uniform(-1, 1)))
        for n, s in enumerate(segs) if kind in ("call", "diary") and n % 2 == 0)
    return SessionResult(sid, f"/x/{sid}.wav", f"{sid}.wav", sha, duration, len(roles), meta,
                         channels, tuple(segs), curves, utterances, codec="pcm_s16le",
                         sample_rate=16000)


KINDS = ["call", "diary", "silent customer", "no speech", "no duration", "tie"]


def _groups(rng) -> list[list[SessionResult]]:
    first = [_session(k, rng, KINDS[k % len(KINDS)]) for k in range(30)]
    first.insert(5, _session(100, rng, status="failed"))
    again = _session(3, rng, "call")  # stored ok, saved again with other segments
    return [first[:12], first[12:] + [first[2]],  # one session twice in a group
            [again, _session(4, rng, status="failed"),  # never replaces a stored ok one
             _session(100, rng, "diary"),  # a failed one replaced by its analysis
             _session(31, rng, "call"), _session(200, rng, status="failed")]]


def _write(path, groups, rules, old: bool, monkeypatch) -> Store:
    # Only the store's tables are compared: the indexes beside it are left out.
    monkeypatch.setattr(SessionWriter, "update_index", lambda *a: None)
    monkeypatch.setattr(SessionWriter, "update_words", lambda *a: None)
    monkeypatch.setattr(sessions, "BULK", 6)  # the groups of 12 and more commit as bulk ones
    store = Store(path)
    store.migrate()
    with writer_before.installed() if old else _nothing():
        w = SessionWriter(store, rules)
        run = w.start_run("synthetic", "", False, "cpu", "engine", {})
        for g in groups:
            w.save_many(g, run)
    return store


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _dump(store: Store) -> dict[str, list[tuple]]:
    """Every table's rows (but the runs'), sorted, each value as its repr: every bit of a
    float counts. Sessions leave out their ingest time and run, which differ by design."""
    out = {}
    with store.read() as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main'").fetchall()]
        for table in sorted(set(tables) - {"runs", "schema_migrations"}):
            skip = " EXCLUDE (ingested_at, run_id)" if table == "sessions" else ""
            rows = con.execute(f"SELECT *{skip} FROM {table}").fetchall()
            out[table] = sorted(tuple(repr(v) for v in row) for row in rows)
    return out


def test_the_vectorised_writer_stores_what_the_old_one_stored(tmp_path, monkeypatch):
    rules = _rules()
    new = _dump(_write(tmp_path / "new.duckdb", _groups(np.random.default_rng(7)), rules,
                       False, monkeypatch))
    old = _dump(_write(tmp_path / "old.duckdb", _groups(np.random.default_rng(7)), rules,
                       True, monkeypatch))
    assert new.keys() == old.keys()
    assert {row[1] for row in new["session_categories"]} == {"'upset_words'", "'raised'"}
    for table in new:
        assert new[table] == old[table], table
    # What the comparison covered: every case made rows of its kind.
    alerts = [r[2] for r in new["alerts"]]
    metrics = new["session_metrics"]
    covered = {"sessions": len(new["sessions"]), "failed": sum("'failed'" in r for r in
                                                               new["sessions"]),
               "volatility alerts": alerts.count("'volatility_p95'"),
               "other alerts": len(alerts) - alerts.count("'volatility_p95'"),
               "unreliable": sum("True" in r for r in metrics),
               "diary set": sum("'diaries'" in r for r in metrics),
               "utterances": len(new["utterances"]), "frames": len(new["frames"]),
               "raised voice": alerts.count("'raised_voice'"),
               "fused": sum("'masked_frustration'" in r or "'negative'" in r
                            for r in new["utterances"])}
    assert all(v > 0 for v in covered.values()), covered
    assert covered["sessions"] == 33


@pytest.mark.parametrize("group", [1, 12])
def test_no_write_ahead_log_is_left_behind_a_writer(tmp_path, monkeypatch, group):
    """DuckDB 2.0 checkpoints when the last connection closes, and every writer connection
    closes at the end of its transaction: the WAL readers would replay stays empty, whether
    the commit was small (one session: written to the WAL, then checkpointed) or large."""
    rng = np.random.default_rng(1)
    monkeypatch.setattr(SessionWriter, "update_index", lambda *a: None)
    monkeypatch.setattr(SessionWriter, "update_words", lambda *a: None)
    monkeypatch.setattr(sessions, "BULK", 10)  # the group of 12 is checkpointed as a bulk one
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    w = SessionWriter(store, _rules())
    w.save_many([_session(k, rng) for k in range(group)], None)
    wal = store.path.with_name(store.path.name + ".wal")
    assert not wal.exists() or wal.stat().st_size == 0
