"""Long-running commands: the dashboard, the inbox worker, and the demo that starts both."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from cli.common import (UNTRAINED_NOTE, app, asr_option, check_asr, fail_usage, load_model,
                        note_untrained,
                        writer_for)
from core.storage.store import DEFAULT_DB

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"


@app.command()
def dashboard(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to show."),
    port: int = typer.Option(8501, help="Port to serve on."),
    host: Optional[str] = typer.Option(None, help="Address to listen on (default 127.0.0.1); "
                                                  "another needs sign-in configured."),
) -> None:
    """Open the Streamlit dashboard."""
    from core.admin.settings import SettingsError
    from dashboard.launch import BindRefused, run_dashboard
    try:
        code = run_dashboard(db, port, host)
    except (BindRefused, SettingsError) as e:
        fail_usage(str(e))
    raise typer.Exit(code)


@app.command()
def worker(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to write (the only writer)."),
    inbox: Optional[Path] = typer.Option(None, help="Folder to watch; default: inbox/ next to "
                                                    "the database."),
    model: str = typer.Option("emotion2vec_plus_large", help="Model name, directory or tiny-random."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    once: bool = typer.Option(False, help="Process what is in the inbox, then exit."),
    archive: bool = typer.Option(True, "--archive/--delete",
                                 help="Keep finished files in archive/ or delete them."),
    poll: float = typer.Option(1.0, help="Seconds between looks at the inbox."),
    settle: float = typer.Option(5.0, help="Seconds a copied-in file must stay unchanged "
                                           "(uploads, and files with a NAME.copied marker, "
                                           "are taken at once)."),
    max_attempts: int = typer.Option(3, help="Tries per file before it is failed."),
    asr: str = asr_option(),
) -> None:
    """Ingest every file placed in the inbox, one at a time, as the single database writer."""
    from core.intake.inbox import InboxError
    from ingest.worker import Worker, WorkerBusy, default_config, stop_on_sigterm

    from cli.common import load_settings_or_exit
    try:
        cfg = default_config(db, inbox, delete=not archive, poll_s=poll, settle_s=settle,
                             max_attempts=max(1, max_attempts),
                             retention=load_settings_or_exit().retention)
    except (InboxError, ValueError) as e:
        fail_usage(str(e))
    writer = writer_for(db)
    lm = load_model(model, device, warm=True)
    note_untrained(lm)
    check_asr(asr)
    typer.secho(f"worker: watching {cfg.inbox} → {db}", err=True)
    from ingest.options import IngestOptions
    w = Worker(writer, lm, cfg, IngestOptions(asr=asr),
               echo=lambda line: typer.echo(f"{datetime.now():%H:%M:%S} {line}", err=True))
    stop_on_sigterm()
    try:
        counts = w.run(once=once)
    except WorkerBusy as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        counts = w.counts
    typer.secho(f"worker: {counts['done']} done, {counts['failed']} failed", err=True)


@app.command()
def demo(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to write."),
    model: str = typer.Option(os.environ.get("EMOSCOPE_MODEL", "emotion2vec_plus_large"),
                              help="Model; falls back to tiny-random when it cannot load."),
    port: int = typer.Option(8501, help="Dashboard port."),
    no_dashboard: bool = typer.Option(False, help="Only ingest the demo sessions."),
    asr: str = asr_option(),
) -> None:
    """Ingest the bundled demo sessions (transcribed by --asr: pocketsphinx where nothing
    better is on disk), then open the dashboard."""
    from core.base.manifest import read
    from ingest.model import ModelUnavailable, load
    from ingest.options import IngestOptions
    from ingest.pipeline import ingest_paths
    from ingest.progress import CliProgress, print_summary

    manifest = DEMO_DIR / "manifest.csv"
    if not manifest.exists():
        fail_usage(f"{manifest} is missing; run `make demo-data`")
    writer = writer_for(db)
    try:
        lm = load(model, "auto")
    except ModelUnavailable as e:
        typer.secho(f"{e}\nUsing tiny-random instead ({UNTRAINED_NOTE}).", fg="yellow", err=True)
        lm = load("tiny-random", "auto")
    check_asr(asr)
    metadata = read(manifest)
    with CliProgress() as bar:
        report = ingest_paths(list(metadata), writer, lm, IngestOptions(asr=asr), metadata,
                              progress=bar.hook)
    print_summary(report)
    from core.index import pattern_runs
    try:  # so the Patterns page has something to show from the start
        run = pattern_runs.compute(writer.store)
        typer.secho(f"patterns: {run.k} among {run.segments:,} moments", err=True)
    except ValueError as e:
        typer.secho(f"patterns: none ({e})", fg="yellow", err=True)
    if no_dashboard:
        raise typer.Exit(report.exit_code)
    with worker_beside(db, lm.name, asr):  # uploads from the dashboard get ingested
        dashboard(db, port, None)


@contextmanager
def worker_beside(db: Path, model: str, asr: str = "none"):
    """`emoscope worker` as a child process for as long as the block runs."""
    import subprocess
    cmd = [sys.executable, "-m", "cli.main", "worker", "--db", str(db), "--model", model,
           "--asr", asr]
    typer.secho(f"worker: {' '.join(cmd[1:])}", err=True)
    proc = subprocess.Popen(cmd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def port_taken(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None: bound as uvicorn binds it."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return e.strerror or str(e)
    for family, kind, proto, _, address in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as e:
                return "the port is already in use" if e.errno == 98 else (e.strerror or str(e))
    return None


@app.command()
def serve(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file (uploads queue beside it)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback unless "
                                               "authentication is configured)."),
    port: int = typer.Option(8000, help="Port to serve on."),
    model: str = typer.Option("emotion2vec_plus_large", help="Model name, directory or tiny-random."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    batching: bool = typer.Option(True, "--batching/--no-batching",
                                  help="Share forward passes between concurrent requests."),
    inbox: Optional[Path] = typer.Option(None, help="Where uploads queue for the worker; "
                                                    "default: inbox/ next to the database."),
    open_loopback: bool = typer.Option(
        False, "--open-loopback", help="Serve loopback clients without credentials although "
                                       "authentication was configured for this store once (its "
                                       "keys since revoked); without it such a server is closed."),
    asr: str = asr_option(),
) -> None:
    """Serve the HTTP and streaming API (FastAPI): predict, stream, sessions, jobs, reports;
    OpenAPI at /docs."""
    from api.auth import Gate
    from api.security import BindRefused, check_bind
    from api.server import serve as run
    from core.admin.settings import SettingsError

    try:
        gate = Gate(None, db, open_loopback)
        check_bind(host, gate.required)
    except (BindRefused, SettingsError) as e:
        fail_usage(str(e))
    taken = port_taken(host, port)  # before the model: loading it takes a while
    if taken:
        fail_usage(f"cannot listen on {host}:{port}: {taken}; choose another with --port")
    lm = load_model(model, device)  # a model that cannot load stops here, in one sentence
    note_untrained(lm)
    check_asr(asr)  # /v1/predict?asr=true and the live stream's text use it
    how = {"credentials": "credentials required",
           "open": "no authentication configured: loopback clients only, without credentials",
           "closed": f"CLOSED: {gate.closed_because}"}[gate.mode]
    typer.secho(f"Emoscope API on http://{host}:{port}/docs (model {lm.name} on {lm.device}; "
                f"{how})", err=True)
    run(host=host, port=port, db=db, model=model, device=device, batching=batching,
        inbox=inbox, open_loopback=open_loopback, asr=asr)
