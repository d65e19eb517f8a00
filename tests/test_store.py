import time
from pathlib import Path

import numpy as np
import pytest

from core.storage import analysers
from core.base.labels import LABELS
from core.storage.migrations import MIGRATIONS
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.analysis.rules import load_rules
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import ChannelQuality, Curve, Segment, SessionMeta, SessionResult

RULES = load_rules(Path(__file__).resolve().parent.parent / "core" / "analysis" / "default_rules.toml")


def opened(tmp_path) -> tuple[Store, SessionWriter, Reader]:
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    return store, SessionWriter(store, RULES), Reader(store, operator())


def make_result(sha="ab" * 32, n_segments=3, status="ok") -> SessionResult:
    rng = np.random.default_rng(0)
    sid = "s" + sha[:15]
    segs = tuple(
        Segment(f"{sid}-c0-{i:05d}", 0, "speaker", i * 2.0, i * 2.0 + 1.5, LABELS[i % 9], 0.5,
                rng.dirichlet(np.ones(9)).astype(np.float32),
                rng.normal(size=16).astype(np.float32), 0.1, 0.0, (), None)
        for i in range(n_segments))
    curve = Curve(0, "speaker", np.arange(10) * 0.1, rng.dirichlet(np.ones(9), 10))
    return SessionResult(sid, "/x/a.wav", "a.wav", sha, 6.0, 1,
                         SessionMeta(agent_id="a1", recorded_at="2026-11-02", tags=("t",)),
                         (ChannelQuality(0, "speaker", 6.0, 0.1, 0.0, 4.5, ()),), segs, (curve,),
                         status=status)


def test_round_trip(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    assert store.migrate() == [name for name, _ in [*MIGRATIONS, *analysers.migrations()]]
    assert store.migrate() == []  # applied once
    reader = Reader(store, operator())
    r = make_result()
    SessionWriter(store, RULES).save(r, run_id=None)
    seg = store.query("SELECT * FROM segments ORDER BY start_s")
    assert seg.segment_id.tolist() == [s.segment_id for s in r.segments]
    np.testing.assert_allclose(np.stack(seg.scores.to_numpy()), np.stack([s.scores for s in r.segments]),
                               rtol=1e-6)
    segs = reader.export_segments(SessionFilter())
    assert segs.segment_id.tolist() == [s.segment_id for s in r.segments]
    np.testing.assert_allclose(np.stack(segs.embedding.to_numpy()),
                               np.stack([s.embedding for s in r.segments]), rtol=1e-6)
    frames = reader.frames(r.session_id)
    assert list(frames.columns[3:]) == LABELS and len(frames) == 10
    sess = reader.session_rows().iloc[0]
    assert sess.agent_id == "a1" and list(sess.tags) == ["t"] and sess.status == "ok"


def test_replace_never_duplicates(tmp_path):
    store, writer, reader = opened(tmp_path)
    writer.save(make_result(n_segments=3), None)
    writer.save(make_result(n_segments=2), None)
    assert reader.counts()["segments"] == 2 and reader.counts()["sessions"] == 1


def test_failure_inside_transaction_leaves_nothing_half_written(tmp_path):
    store, writer, reader = opened(tmp_path)
    writer.save(make_result(), None)
    before = reader.counts()
    metrics = store.query("SELECT * FROM session_metrics ORDER BY speaker")
    assert len(metrics)  # the writer stored the analytics with the session

    def boom(con, sid):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        writer.save(make_result(n_segments=5), None, also=boom)
    assert reader.counts() == before
    assert store.query("SELECT * FROM session_metrics ORDER BY speaker").equals(metrics)


def test_failed_result_never_overwrites_a_good_session(tmp_path):
    store, writer, reader = opened(tmp_path)
    writer.save(make_result(), None)
    bad = SessionResult.failed("/x/a.wav", "ab" * 32, SessionMeta(), "boom")
    assert writer.save(bad, None) is False
    assert writer.status_of("ab" * 32) == "ok" and reader.counts()["segments"] == 3


def test_filter_values_are_parameters(tmp_path):
    store, writer, reader = opened(tmp_path)
    writer.save(make_result(), None)
    hostile = "'; DROP TABLE segments; --"
    assert reader.sessions(SessionFilter(agent=hostile, team=hostile)).empty
    assert reader.counts()["segments"] == 3


HOLD = """
import sys, time
from core.storage.store import Store
print("ready", flush=True)
sys.stdin.readline()  # go
with Store(sys.argv[1]).read() as con:
    print("in", flush=True)
    time.sleep(float(sys.argv[2]))
    print(con.execute("SELECT count(*) FROM runs").fetchone()[0], flush=True)
"""


def test_a_waiting_writer_goes_before_readers_that_arrive_after_it(tmp_path):
    """Writer first: while a write waits for a reader already inside, a newer reader waits at
    the gate and then sees the write (without the gate it would get in first, again and again,
    and starve the writer)."""
    import subprocess
    import sys
    import threading
    root = Path(__file__).resolve().parent.parent
    store = Store(tmp_path / "g.duckdb")
    store.migrate()
    def reader(hold: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(store.path), hold], cwd=root,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc
    first, second = reader("1.5"), reader("0")
    first.stdin.write("go\n")
    first.stdin.flush()
    assert first.stdout.readline().strip() == "in"
    wrote = threading.Event()

    def write():
        with store.write() as con:
            con.execute("INSERT INTO runs (run_id, model, trained, device, started_at) "
                        "VALUES ('r1', 'm', false, 'cpu', now())")
        wrote.set()
    t = threading.Thread(target=write)
    t.start()
    time.sleep(0.4)  # the writer now holds the gate, waiting for the first reader
    second.stdin.write("go\n")
    second.stdin.flush()
    out_second = second.communicate(timeout=60)[0].split()
    t.join(60)
    out_first = first.communicate(timeout=60)[0].split()
    assert wrote.is_set()
    assert out_first == ["0"]  # the reader inside finished on its snapshot
    assert out_second == ["in", "1"]  # the later reader waited for the write, then saw it
    assert (store.gate_path.stat().st_mode & 0o777) == 0o600


def varied_result(i: int, status: str = "ok") -> SessionResult:
    """Session `i` of a series: a customer whose embeddings jump more as `i` grows, so the
    store-relative volatility rule has earlier sessions to compare with and fires late on."""
    rng = np.random.default_rng(i)
    sha = f"{i:02x}" * 32
    sid = "s" + sha[:15]
    segs = tuple(
        Segment(f"{sid}-c{k % 2}-{k // 2:05d}", k % 2, ("agent", "customer")[k % 2], k * 2.0,
                k * 2.0 + 1.5, LABELS[(i + k) % 9], 0.6,
                rng.dirichlet(np.ones(9)).astype(np.float32),
                (rng.normal(size=16) * (1 + i / 4) ** (k % 2)).astype(np.float32), 0.1, 0.0, (),
                None)
        for k in range(8))
    return SessionResult(sid, f"/x/{i}.wav", f"{i}.wav", sha, 16.0, 2, SessionMeta(),
                         tuple(ChannelQuality(c, ("agent", "customer")[c], 16.0, 0.1, 0.0, 6.0,
                                              ()) for c in (0, 1)), segs, (), status=status)


def test_saving_in_groups_writes_the_rows_of_saving_one_at_a_time(tmp_path):
    """save_many is one transaction per group, but each session's analytics see exactly the
    sessions before it — a volatility alert that depends on that order comes out the same."""
    results = [varied_result(i) for i in range(26)]
    results.insert(9, SessionResult.failed("/x/3.wav", results[3].sha256, SessionMeta(), "boom"))
    results.insert(15, varied_result(12))  # the same audio again later: the later one wins
    one = Store(tmp_path / "one.duckdb")
    one.migrate()
    for r in results:
        SessionWriter(one, RULES).save(r, None)
    many = Store(tmp_path / "many.duckdb")
    many.migrate()
    writer = SessionWriter(many, RULES)
    stored = []
    for lo, hi in ((0, 5), (5, 19), (19, len(results))):
        stored += writer.save_many(results[lo:hi], None)
    assert stored.count(False) == 1  # the failed copy never replaced the stored ok session
    alerts = one.query("SELECT * FROM alerts WHERE rule = 'volatility_p95'")
    assert len(alerts)  # the order-dependent rule fired, so the comparison below means something
    for table, key in (("session_metrics", "session_id, speaker"), ("alerts", "session_id, rule"),
                       ("segments", "segment_id"), ("sessions", "session_id")):
        a = one.query(f"SELECT * EXCLUDE (embedding) FROM {table} ORDER BY {key}"
                      if table == "segments" else f"SELECT * FROM {table} ORDER BY {key}")
        b = many.query(f"SELECT * EXCLUDE (embedding) FROM {table} ORDER BY {key}"
                       if table == "segments" else f"SELECT * FROM {table} ORDER BY {key}")
        if table == "sessions":
            a, b = a.drop(columns="ingested_at"), b.drop(columns="ingested_at")
        assert a.astype(str).equals(b.astype(str)), table
