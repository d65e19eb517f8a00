"""`emoscope export`: the reports the Reports page builds, from the command line, with the same
choices (a team, an agent, a person, or sessions by id and date) and the same file names."""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, load_rules_or_exit, require_db, viewer_as
from core.store import DEFAULT_DB

EXPORT_FORMATS = ("pdf", "csv", "parquet", "npy", "json")
THIS_WEEK = "this-week"


def _window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """--since this-week: from this week's Monday (and, without --until, to its end)."""
    if since != THIS_WEEK:
        return since, until
    monday = date.today() - timedelta(days=date.today().weekday())
    return monday.isoformat(), until or (monday + timedelta(days=7)).isoformat()


@app.command()
def export(
    out: Path = typer.Option(Path("data/exports"), help="Folder to write the files into."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to read."),
    team: Optional[str] = typer.Option(None, help="A team report: this team's sessions."),
    agent: Optional[str] = typer.Option(None, help="An agent report: this agent's calls."),
    person: Optional[str] = typer.Option(None, help="A person report: this customer's / "
                                                    "diary person's sessions."),
    session: Optional[list[str]] = typer.Option(None, help="Session id (repeatable)."),
    since: Optional[str] = typer.Option(None, help="From this date (YYYY-MM-DD, or "
                                                   "this-week)."),
    until: Optional[str] = typer.Option(None, help="Before this date (YYYY-MM-DD)."),
    role: Optional[list[str]] = typer.Option(None, help="Only this speaker role's speech "
                                                        "(repeatable): customer, agent, "
                                                        "speaker."),
    rules: Optional[Path] = typer.Option(None, help="Rules TOML for a person's baseline "
                                                    "(default: ./emoscope.toml)."),
    formats: str = typer.Option(",".join(EXPORT_FORMATS), "--format",
                                help="Comma-separated: pdf, csv (sessions and segments), "
                                     "parquet, npy, json."),
    as_: Optional[str] = typer.Option(None, "--as", metavar="EMAIL",
                                      help="Export only what this user may see (their grants in "
                                           "emoscope.toml); default: everything, as the "
                                           "machine's operator."),
) -> None:
    """Write a report: PDF, a per-session CSV, segments (CSV, Parquet, JSON) and embeddings
    (NPY), each named after what it holds, e.g. team-support_2026-11-01_2026-11-14.pdf."""
    from core import notes
    from core.access import operator
    from core.audit import AuditError, AuditLog
    from core.private import private_dir
    from core.queries import Reader
    from core.reports import ReportSpec, build
    from core.store import Store

    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(EXPORT_FORMATS))
    if unknown or not wanted:
        fail_usage(f"--format takes {', '.join(EXPORT_FORMATS)}; not {', '.join(unknown)}")
    audiences = {k: v for k, v in (("team", team), ("agent", agent), ("person", person)) if v}
    if len(audiences) > 1:
        fail_usage("a report is for one audience: give one of --team, --agent, --person")
    kind, key = next(iter(audiences.items()), ("sessions", None))
    since, until = _window(since, until)
    from core.times import as_timestamp
    for name, value in (("--since", since), ("--until", until)):
        if value is not None and as_timestamp(value) is None:
            fail_usage(f"{name} takes a date like 2026-11-01 (or this-week), not {value!r}")
    require_db(db)
    viewer = viewer_as(as_)
    spec = ReportSpec(kind, key, since, until, tuple(session) if session else None,
                      tuple(role or ()))
    formats_built = [*wanted, "sessions"] if "csv" in wanted else wanted
    report = build(Reader(Store(db), viewer), spec,
                   load_rules_or_exit(rules) if kind == "person" else None,
                   notes.spool_dir(db), formats_built)
    if report is None:
        typer.secho("no analysed session matches these filters", fg="red", err=True)
        raise typer.Exit(1)
    private_dir(out)
    paths = [(out / report.files[fmt][0]).resolve() for fmt in formats_built]
    try:  # recorded before anything is written: erasure finds these files through it
        AuditLog.beside(db).record(viewer, "export", f"{len(report.session_ids)} sessions", {
            "formats": formats_built, "files": [str(p) for p in paths], "scope": report.scope,
            "sessions": list(report.session_ids), "filters": audiences,
            "by": None if as_ is None else operator().who})
    except AuditError as e:
        typer.secho(f"error: {e}; nothing was exported", fg="red", err=True)
        raise typer.Exit(1)
    for fmt, path in zip(formats_built, paths):
        path.write_bytes(report.files[fmt][1])
        typer.echo(str(path))
    typer.secho(f"{report.scope} {report.n_segments} segments.", err=True)
