"""The dashboard keeps answering while the worker writes: readers and the writer together.

The worker runs as its own process (DuckDB allows one writing process), files keep arriving
in its inbox (a couple always waiting), and reader threads query through read-only
connections for as long as it takes the worker to commit several files (and at least a few
seconds). Every read must succeed (retrying on the lock), every snapshot must be whole (a job
marked done always has its session's rows), and at the end every file must be stored.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.intake import inbox
from core.storage.store import Store
from tests.audio_gen import silence, write

ROOT = Path(__file__).resolve().parent.parent
# Readers read for at least MIN_WINDOW_S and until the worker has committed MIN_COMMITS files
# meanwhile: the window is defined by writes overlapping reads, not by a fixed time.
MIN_WINDOW_S = 5.0
MIN_COMMITS = 4
MAX_WINDOW_S = 120.0
READERS = 3
FEED_EVERY_S = 0.4
BACKLOG = 2  # files kept waiting in the inbox: the worker never idles, and drains quickly


@dataclass
class ReaderLog:
    reads: int = 0
    retries: int = 0
    torn: int = 0  # snapshots where a done job's session had no segments
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def read_loop(db: Path, stop: threading.Event, log: ReaderLog) -> None:
    store = Store(db, retry_s=30)
    rng = random.Random()
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with store.read() as con:
                jobs = con.execute("SELECT status, session_id FROM jobs").fetchall()
                segs = dict(con.execute("SELECT session_id, count(*) FROM segments "
                                        "GROUP BY session_id").fetchall())
                con.execute("SELECT session_id, count(*) FROM frames GROUP BY session_id").fetchall()
            done = {sid for status, sid in jobs if status == "done"}
            log.torn += sum(1 for sid in done if not segs.get(sid))
            log.reads += 1
        except Exception as e:  # counted, never raised: the test asserts there are none
            log.failures.append(f"{type(e).__name__}: {e}")
        log.latencies.append(time.perf_counter() - t0)
        time.sleep(rng.uniform(0.02, 0.1))  # a dashboard reruns on clicks, not in a hot loop
    log.retries = store.stats["retries"]


def test_readers_never_fail_while_the_worker_writes(tmp_path, speech):
    data = tmp_path / "data"
    db = data / "emoscope.duckdb"
    box = data / "inbox"
    Store(db).migrate()

    def source(i: int) -> bytes:
        clip = np.concatenate([speech * (0.3 + 0.01 * i), silence(0.2 + 0.01 * i), speech * 0.5])
        return write(tmp_path / f"src-{i:02d}.wav", clip).read_bytes()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--db", str(db), "--model", "tiny-random",
         "--device", "cpu", "--settle", "0", "--poll", "0.05"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fed: list[str] = []
    logs = [ReaderLog() for _ in range(READERS)]
    try:
        # Start the clock once the worker is writing.
        inbox.put(box, "first.wav", source(0))
        fed.append("first.wav")
        probe = Store(db)
        deadline = time.monotonic() + 180
        while probe.query("SELECT count(*) n FROM jobs").n[0] == 0:
            assert worker.poll() is None, worker.stdout.read()
            assert time.monotonic() < deadline, "the worker never took its first file"
            time.sleep(0.2)

        stop = threading.Event()
        threads = [threading.Thread(target=read_loop, args=(db, stop, log)) for log in logs]
        for t in threads:
            t.start()

        def done() -> int:
            return int(probe.query("SELECT count(*) n FROM jobs WHERE status = 'done'").n[0])

        t0, done0, i = time.monotonic(), done(), 1
        while True:
            window, committed = time.monotonic() - t0, done() - done0
            if window >= MIN_WINDOW_S and committed >= MIN_COMMITS:
                break
            assert window < MAX_WINDOW_S, f"the worker committed {committed} files in {window} s"
            if i < 60 and len(inbox.waiting(box)) < BACKLOG:
                inbox.put(box, f"call-{i:02d}.wav", source(i))
                fed.append(f"call-{i:02d}.wav")
                i += 1
            time.sleep(FEED_EVERY_S)
        stop.set()
        for t in threads:
            t.join(timeout=60)

        # Let the worker finish what it was given, then stop it the way Ctrl-C does.
        deadline = time.monotonic() + 240
        while True:
            c = probe.query("SELECT count(*) FILTER (status IN ('done', 'failed')) fin, "
                            "count(*) n FROM jobs")
            if c.n[0] == len(fed) and c.fin[0] == len(fed):
                break
            assert worker.poll() is None, worker.stdout.read()
            assert time.monotonic() < deadline, f"worker did not drain: {c.to_dict()}"
            time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()

    reads = sum(log.reads for log in logs)
    failures = [f for log in logs for f in log.failures]
    latencies = sorted(x for log in logs for x in log.latencies)
    figures = {"seconds": round(window, 1), "commits_while_reading": committed,
               "readers": READERS, "reads": reads,
               "failed_reads": len(failures), "retries": sum(log.retries for log in logs),
               "torn_snapshots": sum(log.torn for log in logs), "files": len(fed),
               "worst_latency_s": round(latencies[-1], 3),
               "p95_latency_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3)}
    print("\nconcurrency:", json.dumps(figures))
    out = ROOT / "tests" / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "concurrency.json").write_text(json.dumps(figures, indent=2))

    assert failures == []
    assert reads >= READERS * 10  # they kept reading the whole time, not once at the start
    assert figures["torn_snapshots"] == 0
    store = Store(db)
    jobs = store.query("SELECT original_name, status, session_id FROM jobs")
    assert sorted(jobs.original_name) == sorted(fed)
    assert (jobs.status == "done").all(), jobs[jobs.status != "done"].to_dict("records")
    stored = store.query("SELECT s.session_id, count(g.segment_id) n FROM sessions s "
                         "LEFT JOIN segments g USING (session_id) GROUP BY s.session_id")
    assert set(stored.session_id) == set(jobs.session_id) and len(stored) == len(fed)
    assert (stored.n > 0).all()
    frames = store.query("SELECT count(DISTINCT session_id) n FROM frames").n[0]
    assert frames == len(fed)
