"""Long recordings: streamed decoding, block-by-block inference, bounded memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.storage.store import Store
from tests.audio_gen import silence, write, write_long

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_block_path_matches_the_whole_file_path(tmp_path, model, speech, monkeypatch):
    """The same file held whole and fed block by block: the same segments, quality and curves
    (block boundaries fall in pauses), and the block path never holds the file whole."""
    import ingest.prepare as prepare_mod
    from core.base.types import SessionMeta
    from ingest.options import IngestOptions
    from ingest.pipeline import process_file
    gap = silence(3.0)
    clip = np.concatenate([speech, gap, speech * 0.6, gap, speech * 0.9, gap])
    path = write(tmp_path / "three.flac", np.stack([clip, np.roll(clip, 16000 * 2)]), "flac")
    opts = IngestOptions(engine="reference")
    whole = process_file(path, SessionMeta(), model, opts).result
    block_s = (speech.size + gap.size) / 16_000  # boundaries fall in the pauses
    monkeypatch.setattr(prepare_mod, "LONG_FILE_S", block_s * 1.5)
    monkeypatch.setattr(prepare_mod, "BLOCK_S", block_s)
    items = list(prepare_mod.prepare_stream(path, SessionMeta(), opts))
    parts = [i for i in items if isinstance(i, prepare_mod.Part)]
    assert len(parts) == 3 and max(p.offset_s for p in parts) > 0
    assert all(p.audio.size < 2 * block_s * 16_000 for p in parts)  # one block's speech each
    blocks = process_file(path, SessionMeta(), model, opts).result
    assert blocks.status == whole.status == "ok"
    assert blocks.duration_s == pytest.approx(whole.duration_s, abs=1e-3)
    assert [s.segment_id for s in blocks.segments] == [s.segment_id for s in whole.segments]
    for a, b in zip(blocks.segments, whole.segments):
        assert a.start_s == pytest.approx(b.start_s, abs=0.1)
        assert a.end_s == pytest.approx(b.end_s, abs=0.1)
    for a, b in zip(blocks.channels, whole.channels):
        assert a.rms == pytest.approx(b.rms, rel=1e-3) and a.speaker == b.speaker
    assert [len(c.t_s) for c in blocks.curves] == pytest.approx(
        [len(c.t_s) for c in whole.curves], rel=0.05)
    assert all(np.all(np.diff(c.t_s) > 0) for c in blocks.curves)


_LONG_DRIVER = """
import json, re, resource, sys, time
from pathlib import Path
from ingest.model import load
from tests.store_fixtures import writer_for
from ingest.worker import Worker, default_config

def mib(key):
    return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

db, warm, long_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
w = Worker(writer_for(db), load("tiny-random", "cpu"), default_config(db, poll_s=0.05, settle_s=0),
           echo=lambda line: None)
w.start()
warm.rename(w.cfg.inbox / warm.name)  # a short file first: model and VAD buffers allocated
w.run(once=True)
warm_peak = mib("VmHWM")
Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
base = mib("VmRSS")
t0 = time.perf_counter()
long_file.rename(w.cfg.inbox / long_file.name)
w.run(once=True)
print(json.dumps({"baseline_mib": base, "peak_mib": mib("VmHWM"), "warmup_peak_mib": warm_peak,
                  "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0}))
"""


def test_two_hour_file_is_ingested_in_bounded_memory(tmp_path, speech):
    """Peak resident memory while the two-hour file is ingested, over the resident memory
    before it (peak restarted after a warm-up file, so model loading does not hide growth)."""
    long_file = write_long(tmp_path / "two-hours.flac", 2 * 3600, speech)
    assert long_file.stat().st_size < 10_000_000
    warm = write(tmp_path / "warm.wav", np.concatenate([speech, silence(1.0), speech * 0.5]))
    db = tmp_path / "data" / "emoscope.duckdb"
    run = subprocess.run([sys.executable, "-c", _LONG_DRIVER, str(db), str(warm), str(long_file)],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    grew = figures["peak_mib"] - figures["baseline_mib"]
    figures["grew_mib"] = grew
    print("\ntwo-hour file:", json.dumps(figures))
    out = ROOT / "tests" / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "two_hour_memory.json").write_text(json.dumps(figures, indent=2))
    # Decoded whole, two hours of 16 kHz float32 alone would be 440 MiB.
    assert grew < 150, figures
    store = Store(db)
    job = store.query("SELECT * FROM jobs WHERE file_name = 'two-hours.flac'").iloc[0]
    assert job.status == "done", job.error
    s = store.query("SELECT * FROM sessions WHERE session_id = ?", [job.session_id]).iloc[0]
    assert s.duration_s == pytest.approx(7200, abs=1)
    seg = store.query("SELECT start_s FROM segments WHERE session_id = ? ORDER BY start_s",
                      [job.session_id])
    starts = seg.start_s.to_numpy()
    # The four bursts (minutes 5, 35, 65, 95) are found where they are, and nothing else.
    for minute in (5, 35, 65, 95):
        assert np.any(np.abs(starts - (minute * 60 + 1)) < 1.0), (minute, starts)
    assert np.all(np.min(np.abs(starts[:, None] - (np.array([5, 35, 65, 95]) * 60 + 1)),
                         axis=1) < 10)
