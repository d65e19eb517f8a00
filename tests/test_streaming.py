"""The streaming executor: the same rows as the serial one, batches across files routed back
to their sessions, bounded memory, prepare processes that die or never load torch, and kill -9
of the whole ingest followed by a rerun."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.media.audio import SAMPLE_RATE
from core.storage.store import Store
from tests.audio_gen import copy_and_broken, silence, write
from tests.store_compare import differences
from tests.store_fixtures import writer_for

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, speech, call_audio):
    """Good files in several formats, a stereo call, a second copy of one file, and broken
    ones."""
    d = tmp_path_factory.mktemp("mixed-stream")
    for i, fmt in enumerate(("pcm16.wav", "mp3", "m4a", "opus.ogg", "flac")):
        write(d / f"diary-{i}.{fmt}", np.concatenate([speech * (0.4 + 0.1 * i), silence(0.4),
                                                      speech[: 16_000 * (i + 1)]]), fmt)
    write(d / "call.wav", call_audio)
    copy_and_broken(d, "diary-0.pcm16.wav")
    return d


def ingest(folder, db, model, executor, **kw):
    from ingest.pipeline import ingest_paths
    return ingest_paths([folder], writer_for(db), model, executor=executor, **kw)


@pytest.fixture(scope="module")
def serial(mixed, model, tmp_path_factory):
    """The mixed folder through the serial executor: the reference store and its report."""
    db = tmp_path_factory.mktemp("serial") / "serial.duckdb"
    return Store(db), ingest(mixed, db, model, "serial")


def test_streaming_and_serial_store_the_same_rows_from_batches_across_files(
        mixed, serial, model, tmp_path, monkeypatch):
    import ingest.batching as batching
    import ingest.streaming as streaming
    owners_per_batch = []
    real_infer = streaming.Streaming._infer
    # Part-full batches wait for more speech instead of going after 20 ms of quiet, so the
    # model's batches are made across files whatever the timing of this machine.
    monkeypatch.setattr(batching, "IDLE_S", 5.0)

    def infer(self, batch):
        owners_per_batch.append({w.key[0] for w in batch})
        return real_infer(self, batch)

    monkeypatch.setattr(streaming.Streaming, "_infer", infer)
    reference, serial = serial
    stream = ingest(mixed, tmp_path / "stream.duckdb", model, "streaming", workers=2)
    # One batch held segments of several files; every output still reached its own session,
    # since each session equals the serial run's (where a file's segments run alone).
    assert max(len(o) for o in owners_per_batch) >= 2
    assert differences(reference, Store(tmp_path / "stream.duckdb")) == []
    for r in (serial, stream):
        assert {Path(p).name for p, _ in r.failed} == {"empty.wav", "text.mp3", "silent.wav"}
        assert [Path(p).name for p in r.skipped] == ["diary-9-copy.wav"]  # same audio as diary-0
    assert (serial.ok, serial.failed, serial.skipped) == (stream.ok, stream.failed, stream.skipped)
    assert stream.workers == 2 and stream.peaks["prepare_restarts"] == 0
    runs = Store(tmp_path / "stream.duckdb").query("SELECT status, n_ok, options FROM runs")
    assert runs.status.tolist() == ["finished"] and runs.n_ok[0] == len(stream.ok)
    assert '"executor": "streaming"' in runs.options[0]


def test_segment_queue_fills_batches_to_the_budget_from_many_owners():
    from ingest.batching import SegmentQueue
    rng = np.random.default_rng(0)
    q = SegmentQueue(budget_s=10.0, cap_s=1000.0, idle_s=60.0)
    sent = {}
    for owner in range(6):
        waves = [np.full(int(rng.uniform(0.5, 3.0) * SAMPLE_RATE), owner, np.float32)
                 for _ in range(5)]
        sent[owner] = waves
        q.put((owner, 0), waves)
    q.close()
    seen, batches = {}, []
    while (batch := q.take()) is not None:
        batches.append(batch)
        assert len(batch) * max(w.wave.size for w in batch) <= 10 * SAMPLE_RATE
        for w in batch:
            assert (w.wave == w.key[0]).all()  # the wave is the one its key names
            seen[(w.key[0], w.index)] = w.wave.size
    assert seen == {(o, i): w.size for o, ws in sent.items() for i, w in enumerate(ws)}
    assert max(len({w.key[0] for w in b}) for b in batches) >= 3
    padded = sum(len(b) * max(w.wave.size for w in b) for b in batches[:-1])
    assert padded / (len(batches) - 1) > 0.75 * 10 * SAMPLE_RATE  # full batches, not slivers
    # Several full batches at once (the GPU's way): the same segments, three batches' worth.
    q = SegmentQueue(budget_s=10.0, cap_s=1000.0, idle_s=60.0)
    for owner, waves in sent.items():
        q.put((owner, 0), waves)
    q.close()
    first = q.take(max_batches=3)
    assert 2 * 10 * SAMPLE_RATE < sum(w.wave.size for w in first) <= 3 * 10 * SAMPLE_RATE
    rest = [w for b in iter(q.take, None) for w in b]
    assert sorted((w.key[0], w.index) for w in first + rest) == sorted(seen)


def test_a_prepare_process_that_dies_fails_only_its_own_file(tmp_path, speech, model,
                                                            monkeypatch):
    import ingest.streaming as streaming
    from tests.prepare_helpers import DiesOn
    d = tmp_path / "in"
    d.mkdir()
    for i, name in enumerate(("a-fine.wav", "b-dies.wav", "c-fine.wav", "d-fine.wav")):
        write(d / name, np.concatenate([speech * (0.3 + 0.1 * i), silence(0.2)]))
    monkeypatch.setattr(streaming, "PrepareTask", DiesOn)
    report = ingest(d, tmp_path / "e.duckdb", model, "streaming", workers=2)
    assert [(Path(p).name, why) for p, why in report.failed] == [
        ("b-dies.wav", "the prepare process was killed by SIGKILL (out of memory?)")]
    assert sorted(Path(p).name for p in report.ok) == ["a-fine.wav", "c-fine.wav", "d-fine.wav"]
    assert report.peaks["prepare_restarts"] == 1
    stored = Store(tmp_path / "e.duckdb").query("SELECT file_name FROM sessions").file_name
    assert "b-dies.wav" not in set(stored) and len(stored) == 3  # its part never reached a row


def test_prepare_processes_never_load_torch_nor_rerun_the_main_module(tmp_path, monkeypatch):
    """A prepare process imports no torch, and does not run the parent's main module again
    (here a script that would die, as a Streamlit page left as `__main__` by a test harness
    once did)."""
    import types

    from ingest.prepool import PreparePool
    from tests.prepare_helpers import heavy_modules
    script = tmp_path / "main_script.py"
    script.write_text("raise SystemExit('the main module ran again')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    pool = PreparePool(1, heavy_modules)
    try:
        pool.submit(pool.idle()[0], "probe", ())
        got, deadline = [], time.monotonic() + 120
        while not any(kind in ("done", "died") for kind, _, _ in got):
            assert time.monotonic() < deadline
            got += list(pool.events(timeout=1.0))
    finally:
        pool.close()
    assert [(kind, payload) for kind, _, payload in got] == [("item", []), ("done", None)]
    assert fake_main.__file__ == str(script)  # left as it was


def test_memory_stays_bounded_however_many_files_wait(tmp_path, speech, model, monkeypatch):
    """Files in flight never exceed the window, the segment queue never its cap (plus one
    part), while far more files are queued than either holds."""
    import ingest.streaming as streaming
    monkeypatch.setattr(streaming, "default_window", lambda workers: 3)
    monkeypatch.setattr(streaming, "queue_cap_s", lambda budget: 5.0)
    d = tmp_path / "many"
    d.mkdir()
    clip = speech[: 2 * SAMPLE_RATE]
    for i in range(16):
        write(d / f"f{i:03d}.wav", clip * (0.2 + 0.02 * i))
    report = ingest(d, tmp_path / "m.duckdb", model, "streaming", workers=1)
    assert len(report.ok) == 16
    peaks = report.peaks
    assert peaks["window"] == 3 and peaks["files_in_flight"] <= 3
    assert peaks["peak_queued_s"] <= peaks["cap_s"] + peaks["largest_part_s"]


# argv: marker file, then the CLI's arguments. The second commit hangs inside its transaction
# (its rows written, not committed) until the test kills the whole process group.
_KILLED_RUN = """
import sys, time
from pathlib import Path
import core.storage.sessions as sessions
import ingest.streaming as streaming
from cli.main import app

marker = Path(sys.argv[1])
streaming.GROUP_MAX = 2
real = sessions.SessionWriter.save_many
calls = []

def save_many(self, results, run_id, also=None):
    calls.append(len(results))
    if len(calls) == 2:
        def hang(con, session_id):
            marker.write_text(",".join(r.file_name for r in results))
            time.sleep(600)
        also = [hang] + [None] * (len(results) - 1)
    return real(self, results, run_id, also)

sessions.SessionWriter.save_many = save_many
if __name__ == "__main__":
    app(sys.argv[2:], standalone_mode=True)
"""


def test_kill_9_of_the_whole_ingest_then_a_rerun_stores_every_file_once(
        mixed, serial, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app
    db, marker = tmp_path / "k.duckdb", tmp_path / "reached"
    args = [str(mixed), "--db", str(db), "--model", "tiny-random", "--device", "cpu",
            "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(marker), "ingest", *args],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the ingest never reached its second commit"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the ingest and its prepare processes, all at once
    proc.wait(timeout=30)
    hung = set(marker.read_text().split(","))
    store = Store(db)
    first = store.query("SELECT file_name, status, session_id FROM sessions")
    assert len(first) and not hung & set(first.file_name)  # the open transaction left nothing
    ok = set(first[first.status == "ok"].session_id)
    for table in ("channels", "segments", "frames", "session_metrics"):
        assert set(store.query(f"SELECT DISTINCT session_id FROM {table}").session_id) == ok

    again = CliRunner().invoke(app, ["ingest", *args])
    assert again.exit_code == 1, again.output  # the broken files, named again
    assert differences(serial[0], store) == []  # every good file once, nothing partial
    runs = store.query("SELECT status FROM runs ORDER BY started_at").status.tolist()
    assert runs == ["running", "finished"]  # kill -9 leaves no chance to say more
