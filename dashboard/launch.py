"""`emoscope dashboard`: `streamlit run` on the app file, for one database.

Everything the app enforces is passed on the command line and in the environment, so it holds
wherever the command is started: the address (127.0.0.1 unless sign-in is configured and
`--host` says otherwise), the upload limit, the settings file, and the secrets file holding the
sign-in ([auth] of emoscope.toml turned into Streamlit's format, or a .streamlit/secrets.toml
that has one).
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets as token
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from core.base import places

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_UPLOAD_MB = 500
LOOPBACK = "127.0.0.1"


class BindRefused(ValueError):
    """Serving beyond this machine without sign-in; the message is the one-line reason."""


def upload_limit_mb() -> int:
    """One limit for the server and the upload page: $EMOSCOPE_UPLOAD_MB, else 500."""
    try:
        return max(1, int(os.environ.get("EMOSCOPE_UPLOAD_MB", DEFAULT_UPLOAD_MB)))
    except ValueError:
        return DEFAULT_UPLOAD_MB


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def command(port: int, host: str = LOOPBACK, secrets_file: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
           "--server.address", host, "--server.headless", "true",
           "--server.maxUploadSize", str(upload_limit_mb()),
           "--browser.gatherUsageStats", "false",
           # Users see one sentence per failure, never a trace (the guard logs it instead).
           "--client.showErrorDetails", "false", "--client.toolbarMode", "viewer",
           "--theme.base", "light", "--theme.primaryColor", "#d62728"]
    if secrets_file is not None:
        cmd += ["--secrets.files", str(secrets_file)]
    return cmd


def _toml(table: dict, prefix: str = "") -> str:
    """A small TOML writer for Streamlit's [auth] settings: strings, numbers, booleans, lists,
    tables (JSON's string escapes are valid in TOML basic strings)."""
    lines, subs = [], []
    for k, v in table.items():
        if isinstance(v, dict):
            subs.append((k, v))
        else:
            lines.append(f"{json.dumps(str(k))} = {json.dumps(v)}")
    out = (f"[{prefix}]\n" if prefix else "") + "".join(x + "\n" for x in lines)
    for k, v in subs:
        out += "\n" + _toml(v, f"{prefix}.{json.dumps(str(k))}" if prefix else json.dumps(k))
    return out


def _resolve_env(value):
    """`"env:NAME"` stands for the environment variable NAME: secrets stay out of the file."""
    if isinstance(value, dict):
        return {k: _resolve_env(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise BindRefused(f"[auth] refers to ${name}, which is not set")
        return os.environ[name]
    return value


def secrets_for(auth: dict, db: Path, port: int) -> Path:
    """Streamlit's secrets file generated from [auth] of emoscope.toml, beside the database
    (0600, in a 0700 folder), with a cookie secret kept there across restarts."""
    from core.base.private import private_dir, write_private
    folder = private_dir(places.folder(db, places.DASHBOARD))
    section = _resolve_env(dict(auth))
    if "cookie_secret" not in section:
        kept = folder / "cookie_secret"
        if not kept.exists():
            write_private(kept, token.token_urlsafe(48).encode())
        section["cookie_secret"] = kept.read_text().strip()
    section.setdefault("redirect_uri", f"http://localhost:{port}/oauth2callback")
    return write_private(folder / "secrets.toml", _toml({"auth": section}).encode())


def existing_secrets() -> Path | None:
    """A .streamlit/secrets.toml (where Streamlit itself looks) that configures sign-in."""
    for p in (Path.cwd() / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" /
              "secrets.toml"):
        try:
            with open(p, "rb") as f:
                if tomllib.load(f).get("auth"):
                    return p.resolve()
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return None


def plan(db: Path, port: int, host: str | None = None, settings=None) -> tuple[list[str], dict]:
    """The command and environment `emoscope dashboard` runs; BindRefused when it would serve
    other machines without sign-in."""
    from core.admin.settings import config_path, load_settings
    settings = settings or load_settings()
    if settings.sign_in:
        secrets_file = secrets_for(settings.auth, db, port)
    else:
        secrets_file = existing_secrets()
    host = host or LOOPBACK
    if secrets_file is None and not is_loopback(host):
        raise BindRefused(f"refusing to serve on {host}: no sign-in is configured, so the "
                          "dashboard serves this machine only; add [auth] to emoscope.toml "
                          "(see the README) or drop --host")
    env = dict(os.environ, EMOSCOPE_DB=str(Path(db).resolve()),
               EMOSCOPE_UPLOAD_MB=str(upload_limit_mb()))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APP.parent.parent),
                                                      env.get("PYTHONPATH")]))
    found = config_path()
    if found is not None:  # the same settings and rules whatever folder the app runs in
        env["EMOSCOPE_CONFIG"] = env["EMOSCOPE_RULES"] = str(found)
    if secrets_file is not None:
        env["EMOSCOPE_SIGN_IN"] = "required"
    else:
        env.pop("EMOSCOPE_SIGN_IN", None)
    return command(port, host, secrets_file), env


def run_dashboard(db: Path, port: int = 8501, host: str | None = None) -> int:
    """Run the app until interrupted; returns streamlit's exit code."""
    cmd, env = plan(db, port, host)
    if not Path(db).exists():
        print(f"note: {db} does not exist yet; the dashboard will explain how to ingest.",
              file=sys.stderr)
    bound = cmd[cmd.index("--server.address") + 1]
    if "EMOSCOPE_SIGN_IN" in env:
        print(f"Emoscope dashboard on http://{bound}:{port} (database {db}); sign-in required.",
              file=sys.stderr)
    else:
        print(f"Emoscope dashboard on http://{bound}:{port} (database {db}). No sign-in is "
              "configured, so it serves this machine only (127.0.0.1).", file=sys.stderr)
    return run_child(cmd, env)


def run_child(cmd: list[str], env: dict) -> int:
    """Run Streamlit as a child until it exits. SIGTERM or SIGHUP to this process (a service
    manager stopping it, a closed terminal) stops the child too, instead of leaving it serving
    with nobody to stop it; Ctrl-C reaches both through the terminal."""
    proc = subprocess.Popen(cmd, env=env)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
