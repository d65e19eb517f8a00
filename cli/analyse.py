"""Commands that analyse audio: ingest, predict, recompute."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import (app, asr_option, check_asr, fail_usage, load_model,
                        load_rules_or_exit, note_untrained, writer_for)
from core.storage.store import DEFAULT_DB
from ingest.executors import DEFAULT as DEFAULT_EXECUTOR, help_text as executors_help


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
    executor: str = typer.Option(DEFAULT_EXECUTOR, help=executors_help()),
    address: Optional[str] = typer.Option(None, help="--executor ray: auto (this machine's "
                                                     "cluster), ray://host:10001 or local "
                                                     "(default: local)."),
    shards: Optional[str] = typer.Option(None, help="--executor ray: staging folder or URL for "
                                                    "the shards (default: DB.shards beside the "
                                                    "database)."),
    no_import: bool = typer.Option(False, "--no-import", help="--executor ray: leave the shards "
                                                              "for `emoscope import`."),
    workers: Optional[int] = typer.Option(None, help="Prepare processes (default: cores - 1)."),
    batch_seconds: Optional[float] = typer.Option(
        None, help="Padded audio-seconds per model batch (default: per device)."),
    asr: str = asr_option(),
) -> None:
    """Analyse recordings and store their emotion timelines (and, with --asr, what was said)."""
    from core.base.manifest import ManifestError, read
    from ingest.options import IngestOptions
    from ingest import executors
    from ingest.pipeline import ingest_paths
    from ingest.progress import CliProgress, print_summary
    from ingest.worker import stop_on_sigterm

    if engine not in ("engine", "reference"):
        fail_usage(f"--engine must be engine or reference, not {engine!r}")
    try:
        chosen = executors.get(executor)
    except executors.UsageError as e:
        fail_usage(str(e))
    own = {"address": address, "shards": shards, "no_import": no_import}
    misplaced = [k for k, v in own.items() if v and k not in chosen.options]
    if misplaced:
        fail_usage(_not_for(misplaced[0], executors.EXECUTORS.values()))
    if workers is not None and workers < 1:
        fail_usage("--workers must be at least 1")
    if batch_seconds is not None and batch_seconds <= 0:
        fail_usage("--batch-seconds must be positive")
    metadata = {}
    if manifest is not None:
        try:
            metadata = read(manifest)
        except ManifestError as e:
            fail_usage(str(e))
    targets = list(paths or []) or list(metadata)
    if not targets:
        fail_usage("give audio files or folders (or --manifest CSV)")
    check_asr(asr)
    opts = IngestOptions(engine=engine, batch_seconds=batch_seconds, asr=asr)
    if roles:
        pair = tuple(r.strip() for r in roles.split(","))
        if len(pair) != 2 or not all(pair):
            fail_usage("--roles takes two names, e.g. customer,agent")
        opts = IngestOptions(engine=engine, batch_seconds=batch_seconds, stereo_roles=pair,
                             asr=asr)
    if not chosen.here:  # e.g. ray: the whole ingest is the executor's
        request = executors.Request(targets, metadata, db, model, device, opts, force, workers,
                                    {k: v for k, v in own.items() if k in chosen.options},
                                    open_writer=lambda: writer_for(db))
        try:
            code = chosen.load()(request)
        except executors.UsageError as e:
            fail_usage(str(e))
        raise typer.Exit(code)
    writer = writer_for(db)
    lm = load_model(model, device, warm=engine == "engine")
    note_untrained(lm)
    stop_on_sigterm()  # SIGTERM stops the run as Ctrl-C does: committed work kept, run marked
    with CliProgress() as bar:
        report = ingest_paths(targets, writer, lm, opts, metadata, force, bar.hook,
                              executor=executor, workers=workers)
    print_summary(report)
    raise typer.Exit(130 if report.interrupted else report.exit_code)


def _not_for(option: str, all_executors) -> str:
    """"--address, --shards and --no-import go with --executor ray": every option of the
    executors that take `option`, and their names."""
    owners = [e for e in all_executors if option in e.options]
    flags = [f"--{o.replace('_', '-')}" for e in owners for o in e.options]
    said = ", ".join(flags[:-1]) + " and " + flags[-1] if len(flags) > 1 else flags[0]
    return f"{said} go with --executor {' or '.join(e.name for e in owners)}"


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

    from ingest.predict import predict_file

    if granularity not in ("utterance", "frame"):
        fail_usage("--granularity must be utterance or frame")
    if engine not in ("engine", "reference"):
        fail_usage(f"--engine must be engine or reference, not {engine!r}")
    lm = load_model(model, device)
    result, embedding, problem = predict_file(file, lm, granularity, engine)
    if problem is not None:
        typer.secho(f"{file}: {problem}", fg="red", err=True)
        raise typer.Exit(1)
    if embedding_out is not None:
        np.save(embedding_out, embedding)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2))


@app.command()
def recompute(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to update."),
    rules: Optional[Path] = typer.Option(None, help="Rules TOML (default: ./emoscope.toml, "
                                                    "else the packaged defaults)."),
) -> None:
    """Rebuild session metrics and alerts for every stored session (after a rule change)."""
    from rich.progress import Progress

    from core.storage import derived
    from core.storage.store import Store, StoreBusy

    if not db.exists():
        fail_usage(f"no database at {db}; ingest some audio first")
    loaded = load_rules_or_exit(rules)
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("recompute", total=None)
            out = derived.recompute(Store(db), loaded, progress=lambda done, total: bar.update(
                task, completed=done, total=total))
    except StoreBusy as e:
        typer.secho(f"error: {e}; try again when the ingest has finished", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"recomputed {out['sessions']} sessions · {out['alerts']} alerts · rules "
               f"{out['rules']} ({loaded.source}) · {out['seconds']:.1f} s")
