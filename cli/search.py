"""`emoscope search`: what was said across calls, found by words, filtered like the Search page
and `GET /v1/search`, within the scope of whoever asks, and recorded in the audit."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, require_db, viewer_as
from core.storage.store import DEFAULT_DB


@app.command()
def search(
    query: str = typer.Argument(..., help='Words (all of them), "a phrase", a OR b, prefix*.'),
    role: Optional[list[str]] = typer.Option(None, help="Speaker role (repeatable): "
                                                        "customer, agent, speaker."),
    emotion: Optional[list[str]] = typer.Option(None, help="Emotion of the speech around the "
                                                           "words (repeatable), e.g. angry."),
    team: Optional[list[str]] = typer.Option(None, help="Team (repeatable)."),
    agent: Optional[str] = typer.Option(None, help="Only this agent's calls."),
    person: Optional[str] = typer.Option(None, help="Only this customer's / diary person's "
                                                    "sessions."),
    since: Optional[str] = typer.Option(None, help="Sessions on or after this date "
                                                   "(YYYY-MM-DD)."),
    until: Optional[str] = typer.Option(None, help="Sessions before this date (YYYY-MM-DD)."),
    limit: int = typer.Option(20, min=1, max=200, help="How many moments, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per moment."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to search."),
    as_: Optional[str] = typer.Option(None, "--as", metavar="EMAIL",
                                      help="Search only what this user may see (their grants "
                                           "in emoscope.toml); default: everything, as the "
                                           "machine's operator."),
) -> None:
    """Find the moments where these words were said, newest first: when, which recording and
    where in it, who, how it sounded, and what was said. Exit 1 when nothing matches."""
    from core.index import word_index
    from core.index import word_search as ws
    from core.guard.access import operator
    from core.storage.audit import AuditError, AuditLog
    from core.base.keyed import secret
    from core.storage.queries import Reader
    from core.storage.store import Store

    require_db(db)
    viewer = viewer_as(as_)
    filters = ws.Filters(tuple(role or ()), tuple(emotion or ()), tuple(team or ()), agent,
                         person, since, until)
    try:
        q = ws.parse(query)
        found = ws.search(Reader(Store(db), viewer), q, filters, limit)
    except ws.QueryError as e:
        fail_usage(str(e))
    except word_index.NoTranscripts as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1)
    try:  # recorded before anything is shown
        AuditLog.beside(db).record(viewer, "search", ws.audit_target(q, secret(db)),
                                   ws.audit_detail(found, filters) |
                                   {"by": None if as_ is None else operator().who})
    except AuditError as e:
        typer.secho(f"error: {e}; nothing is shown", fg="red", err=True)
        raise typer.Exit(1)
    for h in found.hits.itertuples(index=False):
        if as_json:
            typer.echo(json.dumps(ws.hit_record(h._asdict()), ensure_ascii=False))
            continue
        typer.echo(f"{h.when:%Y-%m-%d %H:%M}  {h.file_name}  {_clock(h.start_s)}  "
                   f"{h.speaker:<8}  {h.label or '-':<9}  {h.text}  [{h.session_id}]")
    more = " (more match: narrow the query or raise --limit)" if found.more else ""
    typer.secho(f"{len(found.hits)} moments in {len(found.sessions)} sessions, "
                f"{1000 * found.seconds:.0f} ms{more}", err=True)
    if found.hits.empty:
        raise typer.Exit(1)


def _clock(s: float) -> str:
    return f"{int(s // 60):02d}:{s % 60:04.1f}"
