"""Commands for whoever runs the store: the audit, erasure, API keys."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage
from core.storage.store import DEFAULT_DB


@app.command()
def audit(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file whose audit to show."),
    since: Optional[str] = typer.Option(None, help="From this date or time (YYYY-MM-DD[THH:MM])."),
    action: Optional[str] = typer.Option(None, help="Only this action (view, play, export, "
                                                     "upload, erase, erase-request, sign-in)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Who viewed, played, exported, uploaded or erased what, newest first."""
    from core.storage import audit as audit_
    from core.guard.access import operator
    from core.storage.store import Store, StoreBusy
    from core.base.times import as_timestamp

    if since is not None and as_timestamp(since) is None:
        fail_usage(f"--since takes a date like 2026-11-02, not {since!r}")
    if action is not None and action not in audit_.ACTIONS:
        fail_usage(f"--action takes one of {', '.join(audit_.ACTIONS)}")
    store, log = Store(db), audit_.AuditLog.beside(db)
    if store.exists():
        try:  # fold what is spooled when no worker is doing it; a busy store reads the spool
            store.migrate()
            log.fold(store)
        except StoreBusy:
            pass
    rows = audit_.read(store, log, operator(), since, action)
    for r in rows.itertuples(index=False):
        if as_json:
            typer.echo(json.dumps({"audit_id": r.audit_id, "at": r.at.isoformat(), "who": r.who,
                                   "roles": r.roles, "action": r.action, "target": r.target,
                                   "detail": json.loads(r.detail or "{}")}, ensure_ascii=False))
        else:
            typer.echo(f"{r.at:%Y-%m-%d %H:%M:%S}  {r.who:<28} {r.action:<13} {r.target or ''}")
    typer.secho(f"{len(rows)} audit records", err=True)


@contextmanager
def _steps_shown(what: str):
    """An erasure's steps (core.admin.erasure's hook) as one transient progress line: the step
    in hand, and how many of its files are done where it counts them."""
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(what, total=None)

        def hook(step: str, artefact=None, completed: int | None = None,
                 total: int | None = None) -> None:
            bar.update(task, description=f"{what}: {step}", completed=completed or 0,
                       total=total)
        yield hook


@app.command()
def forget(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to erase from."),
    session: Optional[str] = typer.Option(None, help="Erase this session."),
    customer: Optional[str] = typer.Option(None, help="Erase every session of this customer."),
    person: Optional[str] = typer.Option(None, help="Erase every session of this person "
                                                    "(a diary's speaker)."),
    include_sources: bool = typer.Option(False, help="Also delete source recordings that lie "
                                                     "outside the data folder."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Erase a session, a customer or a person: rows, recordings and exports, all or nothing.

    Run it again (with no option) to finish an erasure a crash interrupted and the requests
    admins filed in the dashboard."""
    from core.admin import erasure
    from core.guard.access import operator
    from core.storage.audit import AuditLog
    from core.storage.store import Store, StoreBusy

    given = [(k, v) for k, v in (("session", session), ("customer", customer),
                                 ("person", person)) if v is not None]
    if len(given) > 1:
        fail_usage("give one of --session, --customer, --person")
    store = Store(db)
    try:
        if store.exists():
            store.migrate()
            AuditLog.beside(db).fold(store)
        for p in erasure.resume_pending(store):
            typer.echo(f"finished erasure {p.erasure_id}: {len(p.session_ids)} sessions")
        if not given:
            return
        kind, value = given[0]
        with _steps_shown("looking for every copy") as hook:
            p = erasure.plan(store, kind, value, operator(), include_sources=include_sources,
                             hook=hook)
        if p.empty:
            typer.secho(f"nothing stored for {kind} {value}", fg="yellow", err=True)
            raise typer.Exit(1)
        typer.echo(f"{kind} {value}: {len(p.session_ids)} sessions, {len(p.segment_ids)} "
                   f"segments, {len(p.job_ids)} jobs, {len(p.files)} files")
        if not yes and not typer.confirm("Erase them for good?"):
            raise typer.Exit(1)
        with _steps_shown("erasing") as hook:
            erasure.execute(store, p, hook)
    except StoreBusy as e:
        typer.secho(f"error: {e}; stop the worker or try again", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"erased {kind} {value} (erasure {p.erasure_id})")
    for src in p.left_in_place:
        typer.secho(f"left in place (outside the data folder): {src}", fg="yellow", err=True)


apikey_app = typer.Typer(no_args_is_help=True, help="API keys for the HTTP API: create, "
                                                     "list, revoke (kept hashed beside the "
                                                     "database).")
app.add_typer(apikey_app, name="apikey")


def _keys_or_exit(db: Path):
    from core.guard import apikeys
    from core.guard.access import AccessError
    try:
        return apikeys.load(db)
    except AccessError as e:
        fail_usage(str(e))


@apikey_app.command("create")
def apikey_create(
    name: str = typer.Option(..., help="What the key is for, e.g. crm (unique)."),
    role: str = typer.Option(..., help="supervisor, analyst or admin."),
    team: Optional[list[str]] = typer.Option(None, help="A team whose sessions the key reads "
                                                        "(repeatable)."),
    programme: Optional[list[str]] = typer.Option(None, help="A programme of [access."
                                                             "programmes] (repeatable)."),
    db: Path = typer.Option(DEFAULT_DB, help="The database the key opens."),
) -> None:
    """Create a key and print it once: only its SHA-256 is kept."""
    from cli.common import load_settings_or_exit
    from core.guard import apikeys
    from core.guard.access import operator
    from core.storage.audit import AuditError, AuditLog

    access = load_settings_or_exit().access
    first = not _keys_or_exit(db)
    try:
        key = apikeys.create(db, name, role, team or (), programme or (), access,
                             by=operator().who)
    except apikeys.ApiKeyError as e:
        fail_usage(str(e))
    try:
        AuditLog.beside(db).record(operator(), "api-key", name, {
            "op": "create", "role": role, "teams": team or [], "programmes": programme or []})
    except AuditError as e:
        typer.secho(f"warning: {e}", fg="yellow", err=True)
    typer.echo(key)
    typer.secho(f"API key {name} ({role}) created. Keep it now: it is not shown again and only "
                f"its hash is stored ({apikeys.keys_file(db)}).", err=True)
    if first:
        typer.secho("This is the first API key: from now on `emoscope serve` asks every caller "
                    "for credentials, loopback included.", fg="yellow", err=True)


@apikey_app.command("list")
def apikey_list(db: Path = typer.Option(DEFAULT_DB, help="The database the keys open.")) -> None:
    """The keys: name, role, teams, programmes, when and by whom created (never the key)."""
    keys = _keys_or_exit(db)
    for k in keys:
        scope = "; ".join(filter(None, [
            "teams " + ", ".join(k.get("teams") or []) if k.get("teams") else "",
            "programmes " + ", ".join(k.get("programmes") or []) if k.get("programmes") else "",
        ])) or ("everything" if k.get("role") == "admin" else "nothing")
        typer.echo(f"{k.get('name', '?'):<20} {k.get('role', '?'):<11} {scope:<32} "
                   f"{k.get('created_at', '')} {k.get('created_by', '')}")
    typer.secho(f"{len(keys)} API key{'s' if len(keys) != 1 else ''}", err=True)


@apikey_app.command("revoke")
def apikey_revoke(
    name: str = typer.Argument(..., help="The key's name."),
    db: Path = typer.Option(DEFAULT_DB, help="The database the key opens."),
) -> None:
    """Revoke a key: the API refuses it from its next request."""
    from core.guard import apikeys
    from core.guard.access import operator
    from core.storage.audit import AuditError, AuditLog

    _keys_or_exit(db)
    if not apikeys.revoke(db, name):
        typer.secho(f"no API key named {name}", fg="red", err=True)
        raise typer.Exit(1)
    try:
        AuditLog.beside(db).record(operator(), "api-key", name, {"op": "revoke"})
    except AuditError as e:
        typer.secho(f"warning: {e}", fg="yellow", err=True)
    typer.echo(f"revoked {name}")
