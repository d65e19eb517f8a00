"""Nothing knocks the writer over: names that are not UTF-8, link loops and dangling links,
truncated audio, a container with no duration, a lock held elsewhere, SIGTERM mid-run, and a
worker facing all of that — every file ends ok, failed (with its reason) or skipped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cli.main import app
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from tests.audio_gen import silence, write, write_long, zero_flac_length
from tests.store_fixtures import RULES

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CPU = ["--model", "tiny-random", "--device", "cpu"]
runner = CliRunner()


def bytes_name(folder: Path, raw: bytes) -> Path:
    """A path whose file name is `raw` (bytes that need not be UTF-8), as the OS hands it."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + raw))


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the database's write lock for a while."""
    proc = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; "
                             "c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                             "time.sleep(float(sys.argv[2]))", str(db), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_any_name_or_link_ends_with_a_status_and_truncation_is_flagged(tmp_path, speech):
    d = tmp_path / "in"
    d.mkdir()
    write(bytes_name(d, b"caf\xe9-latin1.wav"), speech)
    clip = np.concatenate([speech, silence(0.5), speech * 0.7, silence(0.5), speech * 0.5])
    full = write(tmp_path / "whole.mp3", clip, "mp3").read_bytes()
    (d / "cut-short.mp3").write_bytes(full[: int(len(full) * 0.6)])
    (d / "loop-a.wav").symlink_to(d / "loop-b.wav")
    (d / "loop-b.wav").symlink_to(d / "loop-a.wav")
    (d / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (d / "m.csv").write_text("file,agent_id\nloop-a.wav,a-1\ncut-short.mp3,a-2\n")
    db = tmp_path / "e.duckdb"
    r = runner.invoke(app, ["ingest", str(d), "--manifest", str(d / "m.csv"), "--db", str(db),
                            *CPU])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = r.output.splitlines()
    assert any("loop-a.wav" in ln and "symbolic link loop" in ln for ln in lines)
    assert any("dangling.wav" in ln and "dangling link" in ln for ln in lines)
    assert any("cut-short.mp3" in ln and "decoded" in ln for ln in lines)  # flagged, told
    store = Store(db)
    rows = store.query("SELECT file_name, status, flags, agent_id FROM sessions "
                       "ORDER BY file_name").set_index("file_name")
    assert rows.loc["caf\\xe9-latin1.wav"].status == "ok"  # stored under an escaped name
    cut = rows.loc["cut-short.mp3"]
    assert (cut.status, list(cut["flags"]), cut.agent_id) == ("ok", ["truncated"], "a-2")
    runs = store.query("SELECT status, n_ok, n_failed FROM runs").iloc[0]
    assert (runs.status, runs.n_ok, runs.n_failed) == ("finished", 2, 3)


def test_a_lock_held_elsewhere_is_waited_out_not_a_traceback(tmp_path, speech, monkeypatch):
    write(tmp_path / "a.wav", speech)
    db = tmp_path / "locked.duckdb"
    monkeypatch.setattr(Store, "WAIT_NOTE_S", 0.5)
    holder = hold_lock(db, 3.0)
    try:
        r = runner.invoke(app, ["ingest", str(tmp_path / "a.wav"), "--db", str(db), *CPU])
    finally:
        holder.wait(timeout=30)
    assert r.exit_code == 0, r.output
    assert "locked by another process" in r.output and "Traceback" not in r.output
    assert Store(db).query("SELECT count(*) n FROM sessions WHERE status = 'ok'").n[0] == 1


# argv: marker, then the CLI's arguments. The model's second batch waits until SIGTERM.
_STOPPED_RUN = """
import sys, time
from pathlib import Path
import ingest.streaming as streaming
from cli.main import app

marker = Path(sys.argv[1])
real, calls = streaming.run_model, []

def run_model(*a, **kw):
    calls.append(1)
    if len(calls) == 2:
        marker.write_text("in the model")
        time.sleep(600)
    return real(*a, **kw)

streaming.run_model = run_model
app(sys.argv[2:])
"""


def test_sigterm_mid_run_marks_the_run_interrupted(tmp_path, speech):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        write(d / f"f{i}.wav", np.concatenate([speech * (0.3 + 0.1 * i), silence(0.3)]))
    db, marker = tmp_path / "t.duckdb", tmp_path / "reached"
    proc = subprocess.Popen([sys.executable, "-c", _STOPPED_RUN, str(marker), "ingest", str(d),
                             "--db", str(db), "--batch-seconds", "3", "--workers", "1", *CPU],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    store = Store(db)
    run = store.query("SELECT * FROM runs").iloc[0]
    assert run.status == "interrupted" and run.finished_at is not None
    stored = store.query("SELECT count(*) n FROM sessions WHERE status = 'ok'").n[0]
    assert run.n_ok == stored < 4  # the counts are what was committed, and it stopped early


_BOUNDED = """
import json, re, sys
from pathlib import Path
from core.media.audio import probe_duration
from core.base.types import SessionMeta
from ingest.options import IngestOptions
from ingest.prepare import Part, prepare_stream

def mib(key):
    return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

long_file, warm = Path(sys.argv[1]), Path(sys.argv[2])
for _ in prepare_stream(warm, SessionMeta(), IngestOptions()):
    pass  # decoder and VAD loaded
Path("/proc/self/clear_refs").write_text("5")
base = mib("VmRSS")
parts = 0
for item in prepare_stream(long_file, SessionMeta(), IngestOptions()):
    parts += isinstance(item, Part)
print(json.dumps({"grew_mib": mib("VmHWM") - base, "duration_s": item.duration_s,
                  "parts": parts, "stated": probe_duration(long_file)}))
"""


def test_decoding_is_bounded_when_the_container_states_no_duration(tmp_path, speech):
    """An hour of audio in a FLAC whose length field is zeroed: decoded whole it would take
    over 440 MiB (the samples and their concatenation); decoded in blocks, a fraction."""
    long_file = zero_flac_length(write_long(tmp_path / "hour.flac", 3600, speech, every_min=20))
    warm = write(tmp_path / "warm.wav", speech)
    run = subprocess.run([sys.executable, "-c", _BOUNDED, str(long_file), str(warm)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["stated"] is None  # nothing told the decoder how long it was
    assert abs(got["duration_s"] - 3600) < 1 and got["parts"] == 3  # every burst found
    assert got["grew_mib"] < 150, got


def test_the_worker_waits_out_a_busy_store_and_takes_any_inbox_name(tmp_path, speech, model,
                                                                    monkeypatch):
    from ingest.worker import Worker, default_config
    data = tmp_path / "data"
    box = data / "inbox"
    box.mkdir(parents=True)
    odd = write(bytes_name(box, b"\xff\xfe-call.wav"), speech)
    write(box / "plain.wav", speech * 0.5)
    db = data / "emoscope.duckdb"
    monkeypatch.setattr(Store, "WAIT_NOTE_S", 0.5)
    said: list[str] = []

    def worker() -> Worker:
        # A short retry window, as a busy store would outlast it: the worker must not care.
        return Worker(SessionWriter(Store(db, retry_s=0.5), RULES), model,
                      default_config(db, poll_s=0.05, settle_s=0), echo=said.append)

    holder = hold_lock(db, 3.0)
    try:
        counts = worker().run(once=True)
    finally:
        holder.wait(timeout=30)
    assert counts["done"] == 2 and counts["failed"] == 0
    assert any("locked by another process" in line for line in said)
    assert not odd.exists() and len(list((data / "archive").iterdir())) == 2
    jobs = Store(db).query("SELECT original_name, status FROM jobs ORDER BY original_name")
    assert jobs.status.tolist() == ["done", "done"]
    assert "\\xff\\xfe-call.wav" in set(jobs.original_name)
    # A restart with another such entry waiting: no crash at start-up, the job is taken.
    write(bytes_name(box, b"\xe9t\xe9.wav"), speech * 0.8)
    assert worker().run(once=True)["done"] == 1
    names = Store(db).query("SELECT file_name FROM sessions").file_name
    assert {"\\xff\\xfe-call.wav", "\\xe9t\\xe9.wav", "plain.wav"} == set(names)
