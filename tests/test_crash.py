"""kill -9 of the worker in the middle of a session, twice, then a restart.

The first kill lands while the model is analysing a file, the second inside the transaction
that writes that file's rows (written, not committed). After each: nothing of that session is
stored and its job is `running`. The restart queues it again, redoes it once, and the store
ends identical to a clean `ingest` of the same files: nothing partial, nothing duplicated, no
job lost or left `running`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.intake import inbox
from core.storage.store import Store
from tests.audio_gen import silence, write
from tests.store_fixtures import writer_for

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# argv: db, marker file, where to stop ("analysis" or "commit"), which occurrence (1-based)
_DRIVER = """
import sys, time
from pathlib import Path
import ingest.worker as worker_mod
from ingest.model import load
from tests.store_fixtures import writer_for
from ingest.worker import Worker, default_config

db, marker, where, nth = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
# batch=1: one job per commit, so the first kill finds the first file committed and the second
# mid-analysis (the batched commit's own failure isolation is tests/test_worker.py's).
w = Worker(writer_for(db), load("tiny-random", "cpu"),
           default_config(db, poll_s=0.05, settle_s=0, batch=1),
           echo=lambda line: print(line, flush=True))
seen = {"analysis": 0, "commit": 0}

def hold(point, name):
    seen[point] += 1
    if point == where and seen[point] == nth:
        marker.write_text(name)
        time.sleep(600)  # killed here

real_process = worker_mod.process_file
def process_file(path, *a, **kw):
    out = real_process(path, *a, **kw)  # the model has run; nothing is stored yet
    hold("analysis", path.name)
    return out

worker_mod.process_file = process_file
w.before_commit = lambda job: hold("commit", job.file_name)
w.run(once=True)
"""


def run_until_killed(db: Path, marker: Path, where: str, nth: int) -> str:
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(db), str(marker), where,
                             str(nth)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 150
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"the worker never reached {where} #{nth}"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return marker.read_text()


def assert_only_committed(db: Path, crashed: str, n_done: int) -> None:
    store = Store(db)
    jobs = store.query("SELECT * FROM jobs").set_index("file_name")
    assert jobs.loc[crashed].status == "running"
    done = set(jobs[jobs.status == "done"].session_id)
    assert len(done) == n_done
    for table in ("sessions", "channels", "segments", "frames"):
        stored = set(store.query(f"SELECT DISTINCT session_id FROM {table}").session_id)
        assert stored == done, table


def test_kill_9_mid_session_twice_then_restart_redoes_it_once(tmp_path, model, speech):
    from typer.testing import CliRunner

    from cli.main import app
    from ingest.pipeline import ingest_paths
    data = tmp_path / "data"
    box = data / "inbox"
    box.mkdir(parents=True)
    names = [f"call-{i}.wav" for i in range(3)]
    for i, name in enumerate(names):
        write(box / name, np.concatenate([speech * (0.5 + 0.2 * i), silence(0.3), speech]))
    # The same files through the CLI's pipeline: what a clean run stores.
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for name in names:
        (ref_dir / name).write_bytes((box / name).read_bytes())
    ref = Store(tmp_path / "ref.duckdb")
    ingest_paths([ref_dir], writer_for(ref.path), model)

    db = data / "emoscope.duckdb"
    marker = tmp_path / "reached"
    crashed = run_until_killed(db, marker, "analysis", 2)  # the second file, mid-analysis
    assert_only_committed(db, crashed, n_done=1)
    again = run_until_killed(db, marker, "commit", 1)  # its redo, inside the transaction
    assert again == crashed
    assert_only_committed(db, crashed, n_done=1)

    # The restart: `emoscope worker` here, in-process (the model is already loaded), as the
    # kills above needed processes of their own and a restart does not.
    restart = CliRunner().invoke(app, ["worker", "--db", str(db), "--model", "tiny-random",
                                       "--device", "cpu", "--once", "--settle", "0",
                                       "--poll", "0.05"])
    assert restart.exit_code == 0, restart.output
    assert "1 queued again" in restart.stderr

    store = Store(db)
    jobs = store.query("SELECT * FROM jobs").set_index("file_name")
    assert sorted(jobs.index) == sorted(names)  # no job lost, none added twice
    assert (jobs.status == "done").all()
    assert jobs.loc[crashed].attempts == 3  # two crashes, then done on the last allowed try
    assert (jobs.drop(index=crashed).attempts == 1).all()
    for table in ("sessions", "segments", "frames", "channels"):
        got = store.query(f"SELECT count(*) n FROM {table}").n[0]
        want = ref.query(f"SELECT count(*) n FROM {table}").n[0]
        assert got == want, table  # nothing partial, nothing duplicated
    got_ids = store.query("SELECT segment_id FROM segments ORDER BY 1").segment_id.tolist()
    assert got_ids == ref.query("SELECT segment_id FROM segments ORDER BY 1").segment_id.tolist()
    assert set(jobs.session_id) == set(store.query("SELECT session_id FROM sessions").session_id)
    assert inbox.waiting(box) == []
    assert len(list((data / "archive").iterdir())) == 3
