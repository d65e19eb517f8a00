"""`emoscope export`: the report builder the Reports page uses, from the command line."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, require_db
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
) -> None:
    """Write segments (CSV, Parquet), embeddings (NPY), predict-format JSON and a PDF report."""
    from core.queries import Reader, SessionFilter
    from core.reports import build_all
    from core.store import Store

    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(EXPORT_FORMATS))
    if unknown or not wanted:
        fail_usage(f"--format takes {', '.join(EXPORT_FORMATS)}; not {', '.join(unknown)}")
    require_db(db)
    reader = Reader(Store(db))
    rows = reader.sessions(SessionFilter(tuple(session) if session else None, agent, person,
                                         team, since, until))
    if rows.empty:
        typer.secho("no analysed session matches these filters", fg="red", err=True)
        raise typer.Exit(1)
    given = {"sessions": ",".join(session or []) or None, "agent": agent, "person": person,
             "team": team, "since": since, "until": until}
    scope = "Sessions: " + ("; ".join(f"{k} {v}" for k, v in given.items() if v) or "all") \
        + f" ({len(rows)} sessions)."
    files = build_all(reader, rows, scope)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"emoscope-{datetime.now():%Y%m%d-%H%M%S}"
    for fmt in wanted:
        path = out / f"{stem}.{fmt}"
        path.write_bytes(files[fmt])
        typer.echo(str(path))
    typer.secho(f"{files['_n']} segments from {len(rows)} sessions", err=True)
