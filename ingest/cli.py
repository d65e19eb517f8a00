"""The `emoscope` command line (Typer). Exit 0: all good; 1: some inputs failed; 2: usage."""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from core.store import DEFAULT_DB, Store

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Emotion timelines for recorded conversations.")

UNTRAINED_NOTE = "untrained test model: its labels mean nothing"


def _fail_usage(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _load_model(model: str, device: str, warm: bool = False):
    from ingest.model import ModelUnavailable, load
    try:
        lm = load(model, device)
    except ModelUnavailable as e:
        _fail_usage(str(e))
    if warm:  # warm the batched engine at load (seed §5.1), not on the first real batch
        from ingest.engine import warm_up
        warm_up(lm)
    return lm


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(None, help="Audio files or folders."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to write."),
    model: str = typer.Option("emotion2vec_plus_large", help="Model name, directory or tiny-random."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    manifest: Optional[Path] = typer.Option(None, help="CSV with per-file metadata."),
    force: bool = typer.Option(False, help="Re-analyse audio that is already stored."),
    engine: str = typer.Option("engine", help="engine (batched) or reference (FunASR's loop)."),
    roles: Optional[str] = typer.Option(None, help="Stereo speaker roles, e.g. 'customer,agent'."),
) -> None:
    """Analyse recordings and store their emotion timelines."""
    from core.manifest import ManifestError, read
    from ingest.options import IngestOptions
    from ingest.pipeline import ingest_paths
    from ingest.progress import CliProgress, print_summary

    if engine not in ("engine", "reference"):
        _fail_usage(f"--engine must be engine or reference, not {engine!r}")
    metadata = {}
    if manifest is not None:
        try:
            metadata = read(manifest)
        except ManifestError as e:
            _fail_usage(str(e))
    targets = list(paths or []) or list(metadata)
    if not targets:
        _fail_usage("give audio files or folders (or --manifest CSV)")
    opts = IngestOptions(engine=engine)
    if roles:
        pair = tuple(r.strip() for r in roles.split(","))
        if len(pair) != 2 or not all(pair):
            _fail_usage("--roles takes two names, e.g. customer,agent")
        opts = IngestOptions(engine=engine, stereo_roles=pair)
    lm = _load_model(model, device, warm=engine == "engine")
    if not lm.trained:
        typer.secho(f"note: {model} is an {UNTRAINED_NOTE}", fg="yellow", err=True)
    store = Store(db)
    with CliProgress() as bar:
        report = ingest_paths(targets, store, lm, opts, metadata, force, bar.hook,
                              derived=_derived_hook(store))
    print_summary(report)
    raise typer.Exit(report.exit_code)


def _derived_hook(store: Store):
    """Analytics written in the session's own transaction, when the analytics module is present."""
    from core.rules import RulesError
    try:
        store.analytics_rules()  # a broken emoscope.toml stops here, before any file is read
    except RulesError as e:
        _fail_usage(str(e))
    return getattr(store, "write_derived", None)


@app.command()
def predict(
    file: Path = typer.Argument(..., help="One audio clip."),
    model: str = typer.Option("emotion2vec_plus_large", help="Model name, directory or tiny-random."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    granularity: str = typer.Option("utterance", help="utterance or frame."),
    embedding_out: Optional[Path] = typer.Option(None, help="Write the embedding to this .npy."),
    engine: str = typer.Option("engine", help="engine or reference."),
) -> None:
    """Print the emotion of one clip as JSON (the seed's format)."""
    import numpy as np

    from core.audio import AudioError, decode
    from ingest.predict import predict_clip

    if granularity not in ("utterance", "frame"):
        _fail_usage("--granularity must be utterance or frame")
    try:
        clip = decode(file).samples.mean(axis=0)
    except AudioError as e:
        typer.secho(f"{file}: {e}", fg="red", err=True)
        raise typer.Exit(1)
    lm = _load_model(model, device)
    result, embedding = predict_clip(lm, clip, granularity, engine)
    if embedding_out is not None:
        np.save(embedding_out, embedding)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2))


@app.command()
def dashboard(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to show."),
    port: int = typer.Option(8501, help="Port to serve on."),
) -> None:
    """Open the Streamlit dashboard."""
    from dashboard.launch import run_dashboard
    raise typer.Exit(run_dashboard(db, port))


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
    settle: float = typer.Option(2.0, help="Seconds a copied-in file must stay unchanged."),
    max_attempts: int = typer.Option(3, help="Tries per file before it is failed."),
) -> None:
    """Ingest every file placed in the inbox, one at a time, as the single database writer."""

    from core.inbox import InboxError
    from ingest.worker import Worker, default_config, stop_on_sigterm

    try:
        cfg = default_config(db, inbox, delete=not archive, poll_s=poll, settle_s=settle,
                             max_attempts=max(1, max_attempts))
    except (InboxError, ValueError) as e:
        _fail_usage(str(e))
    lm = _load_model(model, device, warm=True)
    if not lm.trained:
        typer.secho(f"note: {model} is an {UNTRAINED_NOTE}", fg="yellow", err=True)
    typer.secho(f"worker: watching {cfg.inbox} → {db}", err=True)
    w = Worker(Store(db), lm, cfg,
               echo=lambda line: typer.echo(f"{datetime.now():%H:%M:%S} {line}", err=True))
    stop_on_sigterm()
    try:
        counts = w.run(once=once)
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
) -> None:
    """Ingest the bundled demo sessions, then open the dashboard."""
    from core.manifest import read
    from ingest.model import ModelUnavailable, load
    from ingest.options import IngestOptions
    from ingest.pipeline import ingest_paths
    from ingest.progress import CliProgress, print_summary

    demo_dir = Path(__file__).resolve().parent.parent / "data" / "demo"
    manifest = demo_dir / "manifest.csv"
    if not manifest.exists():
        _fail_usage(f"{manifest} is missing; run `make demo-data`")
    try:
        lm = load(model, "auto")
    except ModelUnavailable as e:
        typer.secho(f"{e}\nUsing tiny-random instead ({UNTRAINED_NOTE}).", fg="yellow", err=True)
        lm = load("tiny-random", "auto")
    metadata = read(manifest)
    store = Store(db)
    with CliProgress() as bar:
        report = ingest_paths(list(metadata), store, lm, IngestOptions(), metadata,
                              progress=bar.hook, derived=_derived_hook(store))
    print_summary(report)
    if no_dashboard:
        raise typer.Exit(report.exit_code)
    with _worker_beside(db, lm.name):  # uploads from the dashboard get ingested
        dashboard(db, port)


@contextmanager
def _worker_beside(db: Path, model: str):
    """`emoscope worker` as a child process for as long as the block runs."""
    import subprocess
    cmd = [sys.executable, "-m", "ingest.cli", "worker", "--db", str(db), "--model", model]
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


@app.command()
def recompute(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to update."),
    rules: Optional[Path] = typer.Option(None, help="Rules TOML (default: ./emoscope.toml, "
                                                    "else the packaged defaults)."),
) -> None:
    """Rebuild session metrics and alerts for every stored session (after a rule change)."""
    from rich.progress import Progress

    from core.rules import RulesError, load_rules
    from core.store import StoreBusy

    if not db.exists():
        _fail_usage(f"no database at {db}; ingest some audio first")
    try:
        loaded = load_rules(rules)
    except RulesError as e:
        _fail_usage(str(e))
    store = Store(db)
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("recompute", total=None)
            out = store.recompute(progress=lambda done, total: bar.update(
                task, completed=done, total=total), rules=loaded)
    except StoreBusy as e:
        typer.secho(f"error: {e}; try again when the ingest has finished", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"recomputed {out['sessions']} sessions · {out['alerts']} alerts · rules "
               f"{out['rules']} ({loaded.source}) · {out['seconds']:.1f} s")


EXPORT_FORMATS = ("csv", "parquet", "npy", "json", "pdf")


@app.command()
def export(
    out: Path = typer.Option(Path("data/exports"), help="Folder to write the files into."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to read."),
    session: Optional[list[str]] = typer.Option(None, help="Session id (repeatable)."),
    agent: Optional[str] = typer.Option(None, help="Only this agent's sessions."),
    person: Optional[str] = typer.Option(None, help="Only this customer's / person's sessions."),
    team: Optional[str] = typer.Option(None, help="Only this team's sessions."),
    since: Optional[str] = typer.Option(None, help="From this date (YYYY-MM-DD)."),
    until: Optional[str] = typer.Option(None, help="Before this date (YYYY-MM-DD)."),
    formats: str = typer.Option(",".join(EXPORT_FORMATS), "--format",
                                help="Comma-separated: csv, parquet, npy, json, pdf."),
) -> None:
    """Write segments (CSV, Parquet), embeddings (NPY), predict-format JSON and a PDF report."""
    from core.reports import build_all

    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(EXPORT_FORMATS))
    if unknown or not wanted:
        _fail_usage(f"--format takes {', '.join(EXPORT_FORMATS)}; not {', '.join(unknown)}")
    if not db.exists():
        _fail_usage(f"no database at {db}; ingest some audio first")
    store = Store(db)
    rows = store.find_sessions(session, agent, person, team, since, until)
    if rows.empty:
        typer.secho("no analysed session matches these filters", fg="red", err=True)
        raise typer.Exit(1)
    given = {"sessions": ",".join(session or []) or None, "agent": agent, "person": person,
             "team": team, "since": since, "until": until}
    scope = "Sessions: " + ("; ".join(f"{k} {v}" for k, v in given.items() if v) or "all") \
        + f" ({len(rows)} sessions)."
    files = build_all(store, rows, scope)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"emoscope-{datetime.now():%Y%m%d-%H%M%S}"
    for fmt in wanted:
        path = out / f"{stem}.{fmt}"
        path.write_bytes(files[fmt])
        typer.echo(str(path))
    typer.secho(f"{files['_n']} segments from {len(rows)} sessions", err=True)


def main() -> None:  # python -m ingest.cli
    app()


if __name__ == "__main__":
    sys.exit(main())
