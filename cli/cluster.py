"""Ingest on a Ray cluster (`emoscope ingest --executor ray`) and `emoscope import`: the
cluster writes Parquet shards, one process imports them into the store."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, writer_for
from core.storage.store import DEFAULT_DB


def default_shards(db: Path) -> Path:
    from core.base import places
    return places.beside(db, places.SHARDS, resolve=False)


def ingest_on_ray(targets: list, metadata: dict, db: Path, model: str, device: str, opts,
                  force: bool, address: str | None, shards: str | None, then_import: bool):
    from ingest.model import ModelUnavailable, canonical_name, locate, weights_hash
    from ingest.pipeline import expand, meta_lookup
    from ingest.progress import CliProgress
    from ingest.ray_executor import connect, model_actors, run_shards

    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        fail_usage(f"unknown device {device!r}; use auto, cpu or cuda")
    try:
        target, trained = locate(model)
    except ModelUnavailable as e:
        fail_usage(str(e))
    where = shards or str(default_shards(db))
    files = expand(targets)
    writer = writer_for(db) if then_import else None
    # Audio already in the store is not decoded again (asked once, handed to every task).
    skip = writer.known_audio() if writer is not None and not force else None
    try:
        connect(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        fail_usage(f"cannot reach the Ray cluster at {address}: {e}")
    n, holds = model_actors(device)
    on = "cuda" if "num_gpus" in holds else "cpu"
    from ingest.speech_to_text import use
    info = {"model": canonical_name(model, target), "weights": weights_hash(target),
            "model_path": target, "trained": trained, "device": on, "engine": opts.engine,
            "asr": use(opts.asr)}  # the workers get it with the analysers
    with CliProgress() as bar:
        run = run_shards(files, meta_lookup(metadata), where, model, on, opts, info, force,
                         skip, progress=bar.hook)
    typer.echo(f"shards: {len(run.written)} written, {run.done_before} already there · "
               f"{n} model actor(s) on {on} · prepare nodes "
               f"{', '.join(f'{k[:8]}×{v}' for k, v in sorted(run.nodes.items())) or '-'} · "
               f"{run.wall_s:.1f} s → {where}", err=True)
    if not then_import:
        failed = [w for w in run.written if w[1] == "failed"]
        raise typer.Exit(1 if failed else 0)
    _import(writer, where, force)


def _import(writer, where: str, force: bool) -> None:
    from core.admin.shard_import import import_shards
    from ingest import prosody  # noqa: F401  (its columns are read from the shards and stored)
    from ingest.progress import CliProgress, print_summary
    from ingest.report import Report

    with CliProgress() as bar:
        done = import_shards(writer, where, force, progress=bar.hook)
    report = Report(done.ok, done.failed + done.refused, done.skipped, done.flagged, done.audio_s, done.wall_s,
                    timings={"decode": 0.0, "vad": 0.0, "model": 0.0, "store": done.wall_s},
                    executor="import")
    print_summary(report)
    typer.echo(f"imported {done.sessions} sessions, {done.rows} rows in {done.wall_s:.1f} s",
               err=True)
    raise typer.Exit(report.exit_code)


@app.command("import")
def import_(
    shards: str = typer.Argument(..., help="Staging folder or URL holding the shards."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to write."),
    force: bool = typer.Option(False, help="Replace audio that is already stored."),
) -> None:
    """Load Parquet shards (from `ingest --executor ray`) into the store, with analytics."""
    if "://" not in shards and not Path(shards).is_dir():
        fail_usage(f"no shards folder at {shards}")
    _import(writer_for(db), shards, force)
