"""`emoscope export`: the report builder the Reports page uses, from the command line."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, require_db, viewer_as
from core.store import DEFAULT_DB

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
    as_: Optional[str] = typer.Option(None, "--as", metavar="EMAIL",
                                      help="Export only what this user may see (their grants in "
                                           "emoscope.toml); default: everything, as the "
                                           "machine's operator."),
) -> None:
    """Write segments (CSV, Parquet), embeddings (NPY), predict-format JSON and a PDF report."""
    from core.access import operator
    from core.audit import AuditError, AuditLog
    from core.private import private_dir
    from core.queries import Reader, SessionFilter
    from core.reports import build_all
    from core.store import Store

    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(EXPORT_FORMATS))
    if unknown or not wanted:
        fail_usage(f"--format takes {', '.join(EXPORT_FORMATS)}; not {', '.join(unknown)}")
    require_db(db)
    viewer = viewer_as(as_)
    reader = Reader(Store(db), viewer)
    rows = reader.sessions(SessionFilter(tuple(session) if session else None, agent, person,
                                         team, since, until))
    if rows.empty:
        typer.secho("no analysed session matches these filters", fg="red", err=True)
        raise typer.Exit(1)
    given = {"sessions": ",".join(session or []) or None, "agent": agent, "person": person,
             "team": team, "since": since, "until": until}
    scope = "Sessions: " + ("; ".join(f"{k} {v}" for k, v in given.items() if v) or "all") \
        + f" ({len(rows)} sessions)."
    files = build_all(reader, rows, scope, formats=wanted)
    private_dir(out)
    stem = f"emoscope-{datetime.now():%Y%m%d-%H%M%S}"
    paths = [(out / f"{stem}.{fmt}").resolve() for fmt in wanted]
    try:  # recorded before anything is written: erasure finds these files through it
        AuditLog.beside(db).record(viewer, "export", f"{len(rows)} sessions", {
            "formats": wanted, "files": [str(p) for p in paths], "scope": scope,
            "sessions": rows.session_id.tolist(), "by": None if as_ is None else operator().who})
    except AuditError as e:
        typer.secho(f"error: {e}; nothing was exported", fg="red", err=True)
        raise typer.Exit(1)
    for fmt, path in zip(wanted, paths):
        path.write_bytes(files[fmt])
        typer.echo(str(path))
    typer.secho(f"{files['_n']} segments from {len(rows)} sessions", err=True)
