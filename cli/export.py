"""`emoscope export`: the reports the Reports page builds, from the command line, with the same
choices (a team, an agent, a person, or sessions by id and date) and the same file names."""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, load_rules_or_exit, require_db, viewer_as
from core.storage.store import DEFAULT_DB


def _is_day(value: str) -> bool:
    try:
        date.fromisoformat(value)
        return len(value) == 10
    except ValueError:
        return False


@app.command()
def export(
    out: Optional[Path] = typer.Option(None, help="Folder to write the files into "
                                                  "(default: exports/ beside the database)."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to read."),
    team: Optional[str] = typer.Option(None, help="A team report: this team's sessions."),
    agent: Optional[str] = typer.Option(None, help="An agent report: this agent's calls."),
    person: Optional[str] = typer.Option(None, help="A person report: this customer's / "
                                                    "diary person's sessions."),
    session: Optional[list[str]] = typer.Option(None, help="Session id (repeatable)."),
    period: str = typer.Option("all", help="latest-week, latest-month (counted back from the "
                                            "newest session of the report's audience), "
                                            "this-week (the calendar week) or all; the same "
                                            "words as the API's `period`."),
    since: Optional[str] = typer.Option(None, help="From this date (YYYY-MM-DD)."),
    until: Optional[str] = typer.Option(None, help="Before this date (YYYY-MM-DD)."),
    role: Optional[list[str]] = typer.Option(None, help="Only this speaker role's speech "
                                                        "(repeatable): customer, agent, "
                                                        "speaker."),
    category: Optional[list[str]] = typer.Option(None, help="Only sessions carrying this "
                                                            "category (repeatable; "
                                                            "emoscope.toml [[categories]])."),
    rules: Optional[Path] = typer.Option(None, help="Rules TOML for a person's baseline "
                                                    "(default: ./emoscope.toml)."),
    formats: Optional[str] = typer.Option(
        None, "--format", help="Comma-separated report formats: pdf, sessions (one row per "
                               "session), csv (segments; brings sessions along), parquet, "
                               "npy, json, and any other registered in core.reporting.reports (a "
                               "wrong name lists them all); default: every one."),
    clips: bool = typer.Option(False, "--clips", help="Also the sessions' audio: "
                               "<name>_clips.zip, one 16-bit WAV per session."),
    bleep: bool = typer.Option(False, "--bleep", help="In the clips, a tone over every word "
                               "redaction replaced in the transcript (card numbers, ...); "
                               "implies --clips."),
    as_: Optional[str] = typer.Option(None, "--as", metavar="EMAIL",
                                      help="Export only what this user may see (their grants in "
                                           "emoscope.toml); default: everything, as the "
                                           "machine's operator."),
) -> None:
    """Write a report: PDF, a per-session CSV, segments (CSV, Parquet, JSON) and embeddings
    (NPY), each named after what it holds, e.g. team-support_2026-11-01_2026-11-14.pdf."""
    from core.storage import notes
    from core.guard.access import operator
    from core.storage.audit import AuditError, AuditLog
    from core.base.private import private_dir
    from core.storage.queries import EVERY, Reader, SessionFilter
    from core.reporting.reports import FORMATS, ReportSpec, build
    from core.storage.store import Store

    wanted = list(FORMATS) if formats is None else \
        [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(FORMATS))
    if unknown or not wanted:
        fail_usage(f"--format takes {', '.join(FORMATS)}; not {', '.join(unknown)}")
    audiences = {k: v for k, v in (("team", team), ("agent", agent), ("person", person)) if v}
    if len(audiences) > 1:
        fail_usage("a report is for one audience: give one of --team, --agent, --person")
    kind, key = next(iter(audiences.items()), ("sessions", None))
    from core.base import periods
    if since in periods.WORDS:  # the older spelling, --since this-week
        period, since = since, None
    if period not in periods.WORDS:
        fail_usage(f"--period takes {', '.join(periods.WORDS)}, not {period!r}")
    for name, value in (("--since", since), ("--until", until)):
        if value is not None and not _is_day(value):
            fail_usage(f"{name} takes a date like 2026-11-01, not {value!r} (for a period: "
                       f"--period {'|'.join(periods.WORDS)})")
    require_db(db)
    viewer = viewer_as(as_)
    reader = Reader(Store(db), viewer)
    if kind in ("team", "agent"):
        known = reader.known_values("team" if kind == "team" else "agent_id")
        if key not in known:
            fail_usage(f"no {kind} {key!r} among the sessions you may see; known {kind}s: "
                       f"{', '.join(known) or 'none'}")
    if period != "all":
        since, until = periods.bounds(period, reader.newest_day(SessionFilter(**{kind: key})
                                                                 if key else EVERY),
                                      since, until)
    spec = ReportSpec(kind, key, since, until, tuple(session) if session else None,
                      tuple(role or ()), tuple(category or ()),
                      period="" if period == "all" else period)
    # the segments' CSV comes with the per-session one, as it always has
    formats_built = [f for f in FORMATS if f in wanted or (f == "sessions" and "csv" in wanted)]
    report = build(reader, spec,
                   load_rules_or_exit(rules) if kind == "person" else None,
                   notes.spool_dir(db), formats_built)
    if report is None:
        typer.secho("no analysed session matches these filters", fg="red", err=True)
        raise typer.Exit(1)
    if out is None:  # beside the store it came from, where erasure and retention look
        from core.base import places
        out = places.folder(db, places.EXPORTS)
    private_dir(out)
    if clips or bleep:  # the audio, through the same scoped reader; bleeped where asked
        from core.reporting.clips import clips_zip
        blob, missing = clips_zip(reader, report.session_ids, bleep)
        report.files["clips"] = (f"{report.stem}_clips{'-bleeped' if bleep else ''}.zip", blob)
        formats_built.append("clips")
        for line in missing:
            typer.secho(f"clips: left out {line}", fg="yellow", err=True)
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
