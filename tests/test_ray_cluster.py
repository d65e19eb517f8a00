"""A real two-node Ray cluster on this machine — `ray start --head` and a second node joining it
with `--num-cpus 1`, each with its own temp dir — and `emoscope ingest --executor ray
--address` through it: shards written on both nodes, imported into the store. The cluster is
stopped whatever happens (every process of the sessions its `ray start`s opened)."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from core.store import Store
from tests.audio_gen import silence, write

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_members(sids: set[int]) -> list[int]:
    """Processes whose session is one of `sids` (what our `ray start`s left running)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) in sids:
                out.append(int(entry.name))
    return out


def stop(sids: set[int]) -> None:
    for sig, wait in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 3.0)):
        for pid in session_members(sids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while session_members(sids) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not session_members(sids), "the test cluster did not stop"


@pytest.fixture
def two_nodes():
    pytest.importorskip("ray")
    tmp = Path(tempfile.mkdtemp(prefix="emo-ray-", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    sids: set[int] = set()

    def start(*args: str) -> None:
        p = subprocess.Popen([str(RAY), "start", "--disable-usage-stats", *args], env=env,
                             start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        sids.add(p.pid)  # its own session: every process it starts stays in it
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out[-2000:]

    try:
        start("--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={tmp / 'head'}",
              "--include-dashboard=false", f"--dashboard-port={free_port()}",
              f"--ray-client-server-port={free_port()}",
              f"--dashboard-agent-listen-port={free_port()}")
        start(f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--temp-dir={tmp / 'second'}",
              f"--dashboard-agent-listen-port={free_port()}")
        yield f"127.0.0.1:{port}", env
    finally:
        stop(sids)


def test_ingest_through_a_two_node_cluster_runs_tasks_on_both(two_nodes, tmp_path, speech,
                                                              call_audio):
    import pyarrow.parquet as pq

    address, env = two_nodes
    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        write(d / f"diary-{i}.wav", np.concatenate([speech * (0.3 + 0.1 * i), silence(0.3)]))
    write(d / "call.wav", call_audio)
    (d / "broken.wav").write_text("not audio")
    shards, db = tmp_path / "shards", tmp_path / "cluster.duckdb"
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "ingest", str(d), "--executor", "ray", "--address",
         address, "--model", "tiny-random", "--device", "cpu", "--db", str(db), "--shards",
         str(shards)], env={**env, "EMOSCOPE_CACHE": os.environ["EMOSCOPE_CACHE"]},
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 1, run.stderr[-3000:]  # broken.wav failed; the rest went in
    assert "broken.wav" in run.stderr
    nodes = {}
    for f in sorted((shards / "sessions").glob("*.parquet")):
        info = json.loads(pq.read_schema(f).metadata[b"emoscope"])
        nodes[info["key"]] = info
    assert len(nodes) == 7
    prepare = {i["prepare_node"] for i in nodes.values()}
    every = prepare | {n for i in nodes.values() for n in i["model_nodes"]} | {
        i["assemble_node"] for i in nodes.values()}
    assert len(prepare) == len(every) == 2, nodes  # prepare tasks on both nodes
    split = {n[:8]: sum(i["prepare_node"] == n for i in nodes.values()) for n in prepare}
    print(f"prepare tasks per node: {split}")
    sessions = Store(db).query("SELECT file_name, status FROM sessions ORDER BY file_name")
    assert sessions.status.tolist().count("ok") == 6
    assert sessions.file_name[sessions.status == "failed"].tolist() == ["broken.wav"]
