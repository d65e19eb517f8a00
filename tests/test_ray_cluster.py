"""A real two-node Ray cluster on this machine — `ray start --head` and a second node joining it
with `--num-cpus 1`, each with its own temp dir: the test run's `ray_cluster` (conftest) — and
`emoscope ingest --executor ray --address` through it: shards written on both nodes, imported
into the store. The cluster is stopped at the end of the run whatever happens (every process
of the sessions its `ray start`s opened)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.storage.store import Store
from tests.audio_gen import silence, write

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.ray_cluster
def test_ingest_through_a_two_node_cluster_runs_tasks_on_both(ray_cluster, tmp_path, speech,
                                                              call_audio):
    import pyarrow.parquet as pq

    address, env = ray_cluster.address, ray_cluster.env
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
