"""Shared fixtures: speech made with espeak-ng, the tiny-random model, a small ingested store."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.audio_gen import conversation, silence, speak, write

# Commands run by tests transcribe only when a test asks (--asr): the CLI's default is auto.
os.environ.setdefault("EMOSCOPE_ASR", "none")
os.environ.setdefault("EMOSCOPE_CACHE", str(Path(__file__).resolve().parent.parent / ".cache"
                                             / "emoscope"))
# Likewise prosody (ingest/prosody.py): measured only where a test turns it on, so the suite's
# many ingesting processes do not each load librosa's kernels (2-4 s a process here). Where a
# test does, numba's compiled kernels come from one cache for every process of the run (and of
# later runs): the compile (about 40 s on this machine) is paid once, not per process.
os.environ.setdefault("EMOSCOPE_PROSODY", "off")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(os.environ["EMOSCOPE_CACHE"]) / "numba"))


@pytest.fixture(scope="session")
def model():
    from ingest.model import load
    return load("tiny-random", "cpu")


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """About four seconds of English speech, a pause, then more speech."""
    return np.concatenate([
        speak("I have been waiting for my refund for three weeks now."),
        silence(1.0),
        speak("Please tell me when it will arrive."),
    ])


@pytest.fixture(scope="session")
def call_audio() -> np.ndarray:
    return conversation(
        ["Thank you for calling, how can I help you today?",
         "I am sorry to hear that. Let me check your order.",
         "I have issued a full refund, it will arrive tomorrow."],
        ["My parcel is two weeks late and nobody answers my emails!",
         "This is the third time I call. I am really angry.",
         "Oh, thank you, that is great news."])


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory, speech, call_audio) -> Path:
    """A folder with a stereo call and a mono diary entry."""
    d = tmp_path_factory.mktemp("audio")
    write(d / "call-001.wav", call_audio)
    write(d / "diary-001.flac", np.concatenate([speech, silence(0.5), speech * 0.8]), "flac")
    return d


@pytest.fixture(scope="session")
def ingested_db(tmp_path_factory, audio_dir, model) -> Path:
    """A store holding `audio_dir` ingested with tiny-random (and its manifest metadata)."""
    from core.base.types import SessionMeta
    from ingest.pipeline import ingest_paths
    from tests.store_fixtures import writer_for

    db = tmp_path_factory.mktemp("db") / "emoscope.duckdb"
    meta = {
        (audio_dir / "call-001.wav").resolve(): SessionMeta(
            agent_id="a-ana", customer_id="c-100", team="support",
            recorded_at="2026-11-02T10:00:00", tags=("delivery", "refund")),
        (audio_dir / "diary-001.flac").resolve(): SessionMeta(
            customer_id="p-001", team="wellbeing", recorded_at="2026-11-03T21:00:00",
            tags=("diary",)),
    }
    report = ingest_paths([audio_dir], writer_for(db), model, metadata=meta)
    assert not report.failed, report.failed
    return db


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> tuple[Path, str]:
    """`emoscope demo --no-dashboard` with tiny-random, once per run: the bundled sessions with
    their manifest metadata and patterns; (database, the command's output). Read-only."""
    from typer.testing import CliRunner

    from cli.main import app
    db = tmp_path_factory.mktemp("demo") / "emoscope.duckdb"
    res = CliRunner().invoke(app, ["demo", "--no-dashboard", "--db", str(db),
                                   "--model", "tiny-random"])
    assert res.exit_code == 0, res.output
    return db, res.output


@pytest.fixture(autouse=True)
def _dashboard_on_loopback():
    """AppTest runs no server: say it listens on loopback, as `emoscope dashboard` does without
    sign-in (an unset address means every address, where the app shows nothing unsigned)."""
    from streamlit import config
    config.set_option("server.address", "127.0.0.1")
    yield


@pytest.fixture(scope="session")
def views_db(tmp_path_factory) -> Path:
    """40 synthetic sessions (tests/views_fixtures.py) with their rules file beside them."""
    from tests.views_fixtures import build
    d = tmp_path_factory.mktemp("views")
    build(d / "views.duckdb", d / "emoscope.toml")
    return d / "views.duckdb"


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray cluster for the whole run, started by the first test that asks for it and
    stopped at the end: a head with 2 CPUs and a second node with 1 (`ray start`, token
    authentication, tests/ray_cluster.py). Drivers join it by address: in-process with
    `ray_driver` below, or as a subprocess given `cluster.address` and `cluster.env`."""
    from tests.ray_cluster import LocalCluster
    with LocalCluster(head_cpus=2) as cluster:  # stopped on the way out, whatever happened
        cluster.add_node(cpus=1)
        yield cluster


@pytest.fixture(scope="module")
def ray_driver(ray_cluster):
    """This process as a Ray driver on the shared cluster, for one test module: `ray` itself,
    connected through the executor's own `connect(address)`."""
    from tests.ray_cluster import driver_on
    with driver_on(ray_cluster) as ray:
        yield ray


@pytest.fixture
def toy_format():
    """A report format registered for one test (core.reporting.reports): the report's segments counted
    per speaker, one line each."""
    from core.reporting import reports

    @reports.register_report_format("toy", "_speakers.txt", "text/plain", "Speakers (toy)")
    def speakers(x: reports.ReportInput) -> bytes:
        counts = x.segments.speaker.value_counts().sort_index()
        return "".join(f"{k} {v}\n" for k, v in counts.items()).encode()
    yield speakers
    reports.unregister_report_format("toy")
