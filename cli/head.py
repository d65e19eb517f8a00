"""`emoscope head train|evaluate|activate|list`: a head trained on corrected moments (core/storage/heads)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, load_rules_or_exit, load_settings_or_exit, require_db
from core.storage.store import DEFAULT_DB

head_app = typer.Typer(no_args_is_help=True, help="Heads trained on reviewers' corrections: "
                                                  "train, evaluate, activate, roll back.")
app.add_typer(head_app, name="head")


def _who() -> str:
    from core.guard.access import operator
    return operator().who


def _table(ev: dict) -> str:
    from core.storage.heads import evaluation_table
    t = evaluation_table(ev)
    pct = lambda v: "-" if v is None or v != v else f"{v:.0%}"  # noqa: E731
    lines = [f"{'label':<14}{'moments':>8}{'precision':>11}{'recall':>8}{'base recall':>13}"]
    for r in t.itertuples(index=False):
        lines.append(f"{r.label:<14}{r.moments:>8}{pct(r.precision):>11}{pct(r.recall):>8}"
                     f"{pct(r[4]):>13}")
    cm = ev["confusion"]
    lines.append(f"\n{ev['folds']}-fold cross-validation on {ev['moments']} corrected moments; "
                 "confusion (rows: the correction, columns: the head's label):")
    width = max(len(x) for x in cm["labels"]) + 2
    lines.append(" " * width + "".join(f"{x:>{width}}" for x in cm["labels"]))
    for name, row in zip(cm["labels"], cm["matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def _audit(db: Path, target: str, detail: dict) -> None:
    from core.guard.access import operator
    from core.storage.audit import AuditError, AuditLog
    try:
        AuditLog.beside(db).record(operator(), "head", target, detail)
    except AuditError as e:
        fail_usage(f"the audit cannot be written ({e}); nothing was changed")


@head_app.command()
def train(
    name: str = typer.Argument(..., help="The head's name; each training is its next version."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    folds: int = typer.Option(5, min=2, max=20, help="Cross-validation folds (fewer when a "
                                                     "label has fewer moments)."),
) -> None:
    """Train a head on the stored embeddings of every corrected moment, with k-fold
    cross-validation against the base model's labels of the same moments."""
    from core.storage import corrections, heads
    from core.guard.access import operator
    from core.storage.queries import Reader
    from core.storage.store import Store, StoreBusy

    require_db(db)
    settings = load_settings_or_exit()
    store = Store(db)
    try:
        store.migrate()
        stored, problems = corrections.fold(store, corrections.spool_dir(db))
    except StoreBusy as e:
        fail_usage(f"{e}; try again when the ingest has finished")
    for p in problems:
        typer.secho(p, fg="yellow", err=True)
    moments = Reader(store, operator()).corrected_moments()
    try:
        t = heads.train(moments, settings.labels, folds)
        version = heads.save(store, name, t, _who())
    except heads.HeadError as e:
        fail_usage(str(e))
    tag = heads.tag(name, version)
    _audit(db, tag, {"act": "train", "moments": t.n_moments,
                     "accuracy": round(t.evaluation["accuracy"], 4)})
    typer.echo(f"trained {tag}: {heads.CLASSIFIER} on {t.n_moments} moments "
               f"({', '.join(t.classes)}), {t.dim}-dim embeddings of {t.model or 'unknown model'}")
    typer.echo(_table(t.evaluation))
    beats = t.evaluation["accuracy"] > t.evaluation["base_accuracy"]
    typer.echo(f"cross-validated accuracy {t.evaluation['accuracy']:.0%} vs the base model's "
               f"{t.evaluation['base_accuracy']:.0%}: "
               + (f"activate it with `emoscope head activate {tag}`" if beats else
                  "it does not beat the base model (activation needs --force)"))


@head_app.command()
def evaluate(
    name: str = typer.Argument(..., help="NAME (its newest version) or NAME@vN."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
) -> None:
    """Per-class precision and recall of a head (cross-validated), and the base model's
    accuracy on the same moments."""
    from core.storage import heads
    from core.storage.store import Store

    require_db(db)
    store = Store(db)
    store.migrate()
    try:
        with store.read() as con:
            head = heads.resolve(con, name)
    except heads.HeadError as e:
        fail_usage(str(e))
    ev = head["evaluation"]
    typer.echo(f"{heads.tag(head['name'], head['version'])} ({head['classifier']}, trained "
               f"{head['trained_at']:%Y-%m-%d %H:%M} by {head['trained_by'] or '-'})")
    typer.echo(_table(ev))
    typer.echo(f"accuracy {ev['accuracy']:.0%} (head, cross-validated) vs "
               f"{ev['base_accuracy']:.0%} (base model) on the same {ev['moments']} moments")


@head_app.command()
def activate(
    name: Optional[str] = typer.Argument(None, help="NAME (its newest version) or NAME@vN."),
    previous: bool = typer.Option(False, "--previous", help="Go back to what was active "
                                                           "before the last activation."),
    base: bool = typer.Option(False, "--base", help="The model's own labels again."),
    force: bool = typer.Option(False, "--force", help="Activate a head that does not beat "
                                                      "the base model."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file."),
    rules: Optional[Path] = typer.Option(None, help="Rules TOML for the rebuilt alerts."),
) -> None:
    """Relabel the store with a head (labels, analytics and alerts, one transaction)."""
    from core.storage import heads
    from core.storage.store import Store, StoreBusy

    require_db(db)
    if sum([name is not None, previous, base]) != 1:
        fail_usage("name one head, or --previous, or --base")
    loaded = load_rules_or_exit(rules)
    store = Store(db)
    try:
        store.migrate()
        if previous:
            with store.read() as con:
                name = heads.previous(con)
        target = name or "the base model"
        _audit(db, target, {"act": "activate", "force": force})
        out = heads.activate(store, name, loaded, _who(), force=force)
    except heads.HeadError as e:
        fail_usage(str(e))
    except StoreBusy as e:
        fail_usage(f"{e}; try again when the ingest has finished")
    typer.echo(f"active: {out['head'] or 'the base model'} · {out['segments']} segments "
               f"relabelled · {out['sessions']} sessions · {out['alerts']} alerts rebuilt")


@head_app.command("list")
def list_heads(db: Path = typer.Option(DEFAULT_DB, help="DuckDB file.")) -> None:
    """Every head with its accuracy against the base model; the active one marked."""
    from core.storage import heads
    from core.storage.store import Store

    require_db(db)
    store = Store(db)
    store.migrate()
    with store.read() as con:
        now = heads.active(con)
        rows = con.execute("SELECT name, version, n_moments, evaluation, trained_at FROM heads "
                           "ORDER BY name, version").fetchall()
    import json
    for n, v, m, ev, at in rows:
        ev = json.loads(ev)
        mark = "*" if heads.tag(n, v) == now else " "
        typer.echo(f"{mark} {heads.tag(n, v):<24} {m:>5} moments  accuracy {ev['accuracy']:.0%}"
                   f"  base {ev['base_accuracy']:.0%}  {at:%Y-%m-%d %H:%M}")
    typer.echo(f"active: {now or 'the base model'}")
