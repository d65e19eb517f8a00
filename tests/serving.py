"""Waiting for a server the tests started: up, or its last output as the reason."""
from __future__ import annotations

import subprocess
import time
import urllib.request


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float = 60) -> subprocess.Popen:
    """Poll `url` until it answers "ok"; kill the process and raise with its output when it
    exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    proc.kill()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    raise RuntimeError(f"{url} did not come up:\n{out[-2000:]}")


# The API answers to loopback names only (core.guard.hosts): Starlette's test client says
# "testserver" unless told otherwise.
LOCAL = "http://localhost"
WS_LOCAL = "ws://localhost"  # and its WebSocket client, whatever base_url says
