"""`emoscope import`: Parquet shards (from `emoscope ingest --executor ray`, which runs as the
`ray` executor in ingest/ray_ingest.py) loaded into the store through the one writer."""
from __future__ import annotations

from pathlib import Path

import typer

from cli.common import app, fail_usage, writer_for
from core.storage.store import DEFAULT_DB


@app.command("import")
def import_(
    shards: str = typer.Argument(..., help="Staging folder or URL holding the shards."),
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to write."),
    force: bool = typer.Option(False, help="Replace audio that is already stored."),
) -> None:
    """Load Parquet shards (from `ingest --executor ray`) into the store, with analytics."""
    from ingest.ray_ingest import import_into

    if "://" not in shards and not Path(shards).is_dir():
        fail_usage(f"no shards folder at {shards}")
    raise typer.Exit(import_into(writer_for(db), shards, force))
