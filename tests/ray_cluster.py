"""A Ray cluster of local nodes for tests and benchmarks: `ray start --head`, then more nodes
joining it (each with its own temp dir and `--num-cpus`). Every `ray start` runs in a session
of its own, and stopping the cluster ends exactly the processes of those sessions — never
another Ray on the machine."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_members(sids: set[int]) -> list[int]:
    """Processes whose session is one of `sids`."""
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


class LocalCluster:
    def __init__(self, head_cpus: int = 2):
        self.tmp = Path(tempfile.mkdtemp(prefix="emo-ray-", dir="/tmp"))  # short socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Token authentication, as a real cluster has: every node and driver gets the token.
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        self.sids: set[int] = set()
        self.nodes = 0
        self.head_cpus = head_cpus

    def __enter__(self) -> "LocalCluster":
        try:
            self._start("--head", f"--port={self.port}", f"--num-cpus={self.head_cpus}",
                        "--include-dashboard=false", f"--dashboard-port={free_port()}",
                        f"--ray-client-server-port={free_port()}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_node(self, cpus: int = 1) -> None:
        self._start(f"--address={self.address}", f"--num-cpus={cpus}")

    def _start(self, *args: str) -> None:
        self.nodes += 1
        p = subprocess.Popen([str(RAY), "start", "--disable-usage-stats",
                              f"--temp-dir={self.tmp / f'node{self.nodes}'}",
                              f"--dashboard-agent-listen-port={free_port()}", *args],
                             env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        self.sids.add(p.pid)  # its own session: every process it starts stays in it
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"ray start failed: {out[-2000:]}")

    def stop(self) -> None:
        # Most exit on SIGTERM at once; the raylets and agents linger on it for 8 s and more,
        # and nothing of a test cluster is worth waiting for.
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            for pid in session_members(self.sids):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while session_members(self.sids) and time.monotonic() < deadline:
                time.sleep(0.2)
        if session_members(self.sids):
            raise RuntimeError("the local Ray cluster did not stop")
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def driver_on(cluster: LocalCluster):
    """Connect this process to `cluster` as a Ray driver (its token and PYTHONPATH in the
    environment, so the workers import the tests' own tasks too); on the way out disconnect
    and put the environment back. Yields the `ray` module."""
    import ray
    from ray._private.authentication_test_utils import reset_auth_token_state

    from ingest.ray_executor import connect
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PYTHONPATH")
    before = {k: os.environ.get(k) for k in keys}
    ray.shutdown()
    os.environ.update({k: cluster.env[k] for k in keys})
    reset_auth_token_state()  # Ray reads its authentication settings once, when imported
    try:
        connect(cluster.address)
        yield ray
    finally:
        ray.shutdown()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_auth_token_state()
